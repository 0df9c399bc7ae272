"""The instance's run queue, with every run tagged with its database when it is submitted.

Runs launched from the UI ("Materialize", "Materialize all", the restore Launchpad) carry
no tag of ours by themselves. `DatabaseRunCoordinator` adds `kotomi_backup/database` before
the run is queued (from its assets, its steps' pools, or a restore's config), so the instance's
`tag_concurrency_limits` hold one run per database whoever launched it. A run over several
databases ("Materialize all") gets `kotomi_backup/databases` (their names) instead: the
per-database pools (`pools: granularity: run`) hold it, and the tag says what it covers.

    run_coordinator:
      module: kotomi_backup_dagster.defs.run_coordinator
      class: DatabaseRunCoordinator
"""

from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun

from .databases import DATABASE_TAG, DATABASES_TAG, databases_of_run


def database_tag_for(run: DagsterRun) -> dict[str, str]:
    """{kotomi_backup/database: name} for a run about exactly one database, {kotomi_backup/
    databases: "blog, kotomi"} for one about several, else {}."""
    if run.tags.get(DATABASE_TAG):
        return {}
    keys = [k.path for k in run.asset_selection or ()]
    keys += [k.asset_key.path for k in run.asset_check_selection or ()]
    pools = run.run_op_concurrency.all_pools if run.run_op_concurrency else None
    names = databases_of_run(run.tags, run.job_name, keys, run.run_config, pools or ())
    if len(names) > 1:
        return {DATABASES_TAG: ", ".join(sorted(names))}
    return {DATABASE_TAG: next(iter(names))} if names else {}


class DatabaseRunCoordinator(QueuedRunCoordinator):
    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        tags = database_tag_for(run)
        if tags:
            self._instance.add_run_tags(run.run_id, tags)
            run = self._instance.get_run_by_id(run.run_id) or run
        return super().submit_run(SubmitRunContext(run, context.workspace))
