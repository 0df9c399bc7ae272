"""`KotomiBackupComponent` in a dg project of its own: scaffolded with `dg scaffold defs`,
configured in defs.yaml, loaded by `dg list defs`; and its values checked at load."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import AssetKey, EnvVar

from kotomi_backup_dagster import KotomiBackupComponent, build_kotomi_backup_defs
from kotomi_backup_dagster.engine.errors import ConfigError
from tests.defs.test_conventions import dg

COMPONENT = "kotomi_backup_dagster.component.KotomiBackupComponent"


def make_project(root: Path) -> Path:
    """An empty dg project, as `dg scaffold project` lays it out."""
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [project]
            name = "site-backups"
            version = "0.1.0"
            requires-python = ">=3.11"

            [tool.dg]
            directory_type = "project"

            [tool.dg.project]
            root_module = "site_backups"
            """
        )
    )
    package = root / "src" / "site_backups"
    (package / "defs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(
        textwrap.dedent(
            """\
            from pathlib import Path

            import dagster as dg


            @dg.definitions
            def defs() -> dg.Definitions:
                return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
            """
        )
    )
    return package / "defs"


@pytest.mark.slow
def test_scaffolded_configured_and_listed_by_dg(tmp_path: Path, kotomi_db: Path) -> None:
    defs_dir = make_project(tmp_path)
    env = {"PYTHONPATH": str(tmp_path / "src"), "KOTOMI_DB_PATH": str(kotomi_db)}
    made = dg("scaffold", "defs", COMPONENT, "kotomi_backup", cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    defs_yaml = defs_dir / "kotomi_backup" / "defs.yaml"
    scaffolded = yaml.safe_load(defs_yaml.read_text())
    assert scaffolded["type"] == COMPONENT
    assert scaffolded["attributes"]["databases"][0]["path"] == {"env": "KOTOMI_DB_PATH"}

    attributes = scaffolded["attributes"]
    attributes["databases"].append({"name": "blog", "path": str(kotomi_db)})
    attributes["destinations"] = [str(tmp_path / "backups"), "s3://bucket/kotomi"]
    attributes["schedules"] = {"backup": "30 1 * * *", "drill": "0 6 * * 1"}
    defs_yaml.write_text(yaml.safe_dump(scaffolded))
    listed = dg("list", "defs", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    found: dict[str, Any] = json.loads(listed.stdout)
    assets = {a["asset_key"]: a for a in found["assets"]}
    assert {"kotomi/upload", "blog/upload", "blog/restore_drill"} <= set(assets)
    assert set(assets["blog/upload"]["kinds"]) == {"file", "s3"}
    assert assets["blog/prune"]["dependency_keys"] == ["blog/upload"]
    schedules = {s["name"]: s["cron_schedule"] for s in found["schedules"]}
    assert schedules["kotomi_daily_backup"] == "30 1 * * *"
    assert schedules["kotomi_weekly_restore_drill"] == "0 6 * * 1"
    assert {s["name"] for s in found["sensors"]} == {
        "kotomi_backup_health",
        "kotomi_backup_run_failure_alerts",
        "kotomi_prune_after_upload",
        "kotomi_run_history_cleanup",
    }

    # A bad value fails `dg check defs` with the component's line.
    attributes["verify"] = "thorough"
    defs_yaml.write_text(yaml.safe_dump(scaffolded))
    checked = dg("check", "defs", cwd=tmp_path, env=env)
    assert checked.returncode != 0
    assert "verify 'thorough': use quick or full" in checked.stdout + checked.stderr


def component(**changes: Any) -> KotomiBackupComponent:
    attributes: dict[str, Any] = {
        "databases": [{"name": "kotomi", "path": "/data/kotomi.db"}],
        "destinations": ["/backups"],
        "alerts": {"webhook_url": {"env": "HOOK_URL"}, "stale_hours": 30},
        "retention": {"keep_daily": 14},
        "owners": ["ops@example.test"],
        **changes,
    }
    return KotomiBackupComponent.model_validate(attributes)


def test_component_values_reach_the_definitions_and_secrets_stay_env_references(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert component().options().notifier.webhook_url is None  # unset: no webhook
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/hook")
    options = component().options()
    assert options.notifier.webhook_url == EnvVar("HOOK_URL")  # read at run time, never shown
    assert options.retention_policy().keep_daily == 14
    defs = component().build_defs(None)  # type: ignore[arg-type]  # the context is not used
    node = defs.resolve_asset_graph().get(AssetKey(["kotomi", "upload"]))
    assert node.owners == ["ops@example.test"]
    assert node.freshness_policy is not None
    assert node.freshness_policy.fail_window.to_timedelta().total_seconds() == 30 * 3600


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"databases": []}, "no database configured"),
        ({"databases": [{"name": "a/b", "path": "/x.db"}]}, "databases: "),
        ({"destinations": ["ftp://host/x"]}, "ftp"),
        ({"timezone": "Mars/Olympus"}, "Mars/Olympus"),
        ({"schedules": {"backup": "never"}}, "backup cron 'never' is not a cron expression"),
        ({"owners": ["nobody"]}, "owner 'nobody': use an email address or team:<name>"),
        ({"alerts": {"size_drop_ratio": 3}}, "alerts.size_drop_ratio '3.0': give a ratio"),
        ({"retention": {"keep_daily": -5}}, "retention.keep_daily '-5': give a whole number"),
    ],
)
def test_a_bad_component_value_fails_at_load_with_one_line(
    changes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        component(**changes).options()
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_a_misspelt_variable_warns_at_load_and_a_misspelt_key_is_refused_naming_it(
    tmp_path: Path, kotomi_db: Path
) -> None:
    defs_dir = make_project(tmp_path)
    (defs_dir / "kotomi_backup").mkdir()
    defs_yaml = defs_dir / "kotomi_backup" / "defs.yaml"
    attributes: dict[str, Any] = {
        "databases": [{"name": "kotomi", "path": {"env": "KOTOMI_BACKUP_MAIN_DB"}}],
        "destinations": [str(tmp_path / "backups")],
        "age_recipients": {"env": "KOTOMI_BACKUP_AGE_RECIPIENTS"},
    }
    defs_yaml.write_text(yaml.safe_dump({"type": COMPONENT, "attributes": attributes}))
    env = {
        "PYTHONPATH": str(tmp_path / "src"),
        "KOTOMI_BACKUP_MAIN_DB": str(kotomi_db),  # named by the defs.yaml: known
        "KOTOMI_BACKUP_AGE_RECIPIENT": "age1qqqq",  # meant for the one it names: unread
    }
    loaded = dg("check", "defs", cwd=tmp_path, env=env)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    warned = [line for line in (loaded.stdout + loaded.stderr).splitlines() if "WARNING" in line]
    assert len(warned) == 1, loaded.stdout + loaded.stderr
    assert "KOTOMI_BACKUP_AGE_RECIPIENT is not a setting" in warned[0], warned
    assert "did you mean KOTOMI_BACKUP_AGE_RECIPIENTS?" in warned[0], warned

    attributes["age_recipient"] = "age1qqqq"  # a key that is no attribute: refused, named
    defs_yaml.write_text(yaml.safe_dump({"type": COMPONENT, "attributes": attributes}))
    refused = dg("check", "defs", cwd=tmp_path, env=env)
    assert refused.returncode != 0
    assert "'age_recipient' was unexpected" in refused.stdout + refused.stderr


def test_the_factory_builds_the_same_code_location_from_python(tmp_path: Path) -> None:
    defs = build_kotomi_backup_defs(
        {"kotomi": "/data/kotomi.db", "blog": "/data/blog.db"}, destinations=[str(tmp_path)]
    )
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert AssetKey(["blog", "restore_test"]) in keys and len(keys) == 14
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"kotomi_backup", "restore_job"}
