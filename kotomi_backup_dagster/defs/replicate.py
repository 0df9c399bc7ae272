"""One database's stage, copied for another database without running Dagster's decorators
again: with 200 databases the decorators' signature inspection was most of the load time.

A stage's asset (or check) is built once by its decorator for the first database; every
other database gets a copy whose op, inputs, outputs, keys, checks, group, description and
pool are renamed to it. The compute function is shared: it finds its database from the
asset key it runs for (`DatabaseSpec` lookup by the key's first part).
"""

from collections.abc import Callable

from dagster import (
    AssetChecksDefinition,
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    In,
    OpDefinition,
    Out,
)

from .databases import DatabaseSpec


class _Renamer:
    def __init__(self, old: DatabaseSpec, new: DatabaseSpec) -> None:
        self.old, self.new = old, new

    def name(self, name: str) -> str:
        """Op, input and output names start with the database's identifier."""
        prefix = self.old.key
        return self.new.key + name[len(prefix) :] if name.startswith(prefix) else name

    def key(self, key: AssetKey) -> AssetKey:
        if key.path and key.path[0] == self.old.name:
            return AssetKey([self.new.name, *key.path[1:]])
        return key

    def check(self, spec: AssetCheckSpec) -> AssetCheckSpec:
        return AssetCheckSpec(
            spec.name,
            asset=self.key(spec.asset_key),
            description=spec.description,
            blocking=spec.blocking,
            metadata=spec.metadata,
        )

    def op(self, op: OpDefinition) -> OpDefinition:
        return OpDefinition(
            compute_fn=op.compute_fn,
            name=self.name(op.name),
            ins={self.name(i.name): In.from_definition(i) for i in op.input_defs},
            outs={self.name(o.name): Out.from_definition(o) for o in op.output_defs},
            description=op.description,
            config_schema=op.config_schema,
            required_resource_keys=op.required_resource_keys,
            tags=op.tags,
            retry_policy=op.retry_policy,
            code_version=op.version,
            pool=self.new.pool,
        )


def replicate_asset(
    template: AssetsDefinition,
    old: DatabaseSpec,
    new: DatabaseSpec,
    describe: Callable[[DatabaseSpec], str],
    group_name: str,
) -> AssetsDefinition:
    """`template` (one asset, built for `old`) for database `new`."""
    r = _Renamer(old, new)
    [spec] = template.specs
    copied = AssetSpec.dagster_internal_init(
        key=r.key(spec.key),
        deps=[r.key(dep.asset_key) for dep in spec.deps],
        description=describe(new),
        metadata=spec.metadata,
        skippable=spec.skippable,
        group_name=group_name,
        code_version=spec.code_version,
        automation_condition=spec.automation_condition,
        owners=spec.owners,
        tags=spec.tags,
        kinds=spec.kinds,
        partitions_def=spec.partitions_def,
        legacy_freshness_policy=spec.legacy_freshness_policy,
        freshness_policy=spec.freshness_policy,
    )
    return AssetsDefinition.dagster_internal_init(
        keys_by_input_name={r.name(n): r.key(k) for n, k in template.keys_by_input_name.items()},
        keys_by_output_name={r.name(n): r.key(k) for n, k in template.keys_by_output_name.items()},
        node_def=r.op(template.op),
        selected_asset_keys=None,
        can_subset=template.can_subset,
        resource_defs=None,
        backfill_policy=None,
        check_specs_by_output_name={
            r.name(n): r.check(s) for n, s in template.check_specs_by_output_name.items()
        },
        selected_asset_check_keys=None,
        is_subset=False,
        specs=[copied],
        execution_type=template.execution_type,
        hook_defs=None,
    )


def replicate_check(
    template: AssetChecksDefinition, old: DatabaseSpec, new: DatabaseSpec
) -> AssetChecksDefinition:
    """`template` (one check, built for `old`) for database `new`."""
    r = _Renamer(old, new)
    checks: AssetChecksDefinition = AssetChecksDefinition.create(
        keys_by_input_name={r.name(n): r.key(k) for n, k in template.keys_by_input_name.items()},
        node_def=r.op(template.op),
        check_specs_by_output_name={
            r.name(n): r.check(s) for n, s in template.check_specs_by_output_name.items()
        },
        can_subset=False,
    )
    return checks
