"""Where the backup stages hand over their `StagedBackup`: one file per run.

Dagster's default IO manager keeps an asset's value at one path per asset, shared by every
run. A failed upload re-executed after a later run (the next scheduled backup) would then load
that later run's staged backup instead of its own, and fail or upload the wrong one. Here the
value lives under the run that produced it, and a re-execution loads it from the run it
re-executes (Dagster gives the producing run's id on the input's upstream output).
"""

import pickle
import shutil
import time
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext

from ...engine.backup import STALE_STAGING_SECONDS

FOLDER = "kotomi_staged"


class RunScopedIOManager(ConfigurableIOManager):
    """Pickles each output under `<storage>/kotomi_staged/<run id>/<asset key>`; run folders
    older than the staging files they point to (a week) are removed."""

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        root = _root(context)
        path = root / context.run_id / _name(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_bytes(pickle.dumps(obj))
        tmp.replace(path)
        _drop_stale_runs(root, keep=context.run_id)

    def load_input(self, context: InputContext) -> Any:
        upstream = context.upstream_output
        assert upstream is not None
        path = _root(context) / upstream.run_id / _name(upstream)
        return pickle.loads(path.read_bytes())


def _root(context: InputContext | OutputContext) -> Path:
    return Path(context.step_context.instance.storage_directory()) / FOLDER


def _name(context: OutputContext) -> str:
    return "__".join(context.asset_key.path)


def _drop_stale_runs(root: Path, keep: str) -> None:
    cutoff = time.time() - STALE_STAGING_SECONDS
    for run in root.iterdir():
        if run.name != keep and run.is_dir() and run.stat().st_mtime < cutoff:
            shutil.rmtree(run, ignore_errors=True)
