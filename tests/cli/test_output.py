"""What the CLI writes for people: `list` fits the width COLUMNS gives, every stderr line has
one prefix, a drill that ran on nothing prints no empty table, and the README's synopsis
names every flag each command takes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kotomi_backup_dagster.cli import build_parser
from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.settings import BackupSettings
from tests.conftest import REPO, AgeKey, one_line_error, run_cli
from tests.defs.alerts.conftest import free_port


def test_list_fits_the_width_columns_gives_and_keeps_every_backup_id_whole(
    kotomi_db: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "backups"
    for backup_format in ("full", "paged", "full"):  # one day: the middle one fills no tier
        settings = BackupSettings.from_env(
            db_path=kotomi_db, urls=(str(dest),), backup_format=backup_format
        )
        run_backup(settings)
    listed = json.loads(run_cli("list", "--to", str(dest), "--json").stdout)
    ids = [b["backup_id"] for b in listed["destinations"][0]["backups"]]
    for columns in ("100", "80"):
        shown = run_cli("list", "--to", str(dest), env={"COLUMNS": columns})
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert max(len(line) for line in lines) <= int(columns), shown.stdout  # was ~200
        for backup_id in ids:
            assert any(backup_id in line for line in lines), shown.stdout
        assert "newest, daily," in shown.stdout and "paged" in shown.stdout
    piped = run_cli("list", "--to", str(dest))  # no COLUMNS: wide, one line per backup
    rows = [line for line in piped.stdout.splitlines() if any(i in line for i in ids)]
    assert len(rows) == 3 and max(len(line) for line in piped.stdout.splitlines()) <= 200
    assert "created (UTC)" in piped.stdout


def test_a_drill_that_drilled_nothing_prints_its_error_and_no_empty_table(
    kotomi_db: Path, tmp_path: Path, age_key: AgeKey
) -> None:
    dest = tmp_path / "backups"
    env = {"KOTOMI_DB_PATH": str(kotomi_db), "KOTOMI_BACKUP_AGE_RECIPIENTS": age_key.recipient}
    assert run_cli("backup", "--to", str(dest), env=env).returncode == 0
    import pyrage

    other = tmp_path / "other-key.txt"  # a key, but not this backup's
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    drilled = run_cli("drill", "--from", str(dest), env={"KOTOMI_BACKUP_AGE_IDENTITY": str(other)})
    assert drilled.returncode == 2
    assert drilled.stdout == ""  # was the table's frame with no row in it
    assert "drill not run at " in one_line_error(drilled)


def test_every_line_on_stderr_starts_with_one_prefix(tmp_path: Path, kotomi_db: Path) -> None:
    unreachable = {
        "AWS_ACCESS_KEY_ID": "AKIAKOTOMITESTKEY01",
        "AWS_SECRET_ACCESS_KEY": "kotomi-test-secret-unreachable",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "KOTOMI_BACKUP_RETRIES": "1",
    }
    runs = [
        run_cli("list", "--bogus"),  # argparse's usage error: was "kotomi-backup: unrecognized"
        run_cli("restore"),
        run_cli("list", "--to", "s3://offsite-bucket/prod", env=unreachable),  # "cannot list"
        run_cli("backup", "--db", str(kotomi_db), "--to", "s3://b/p", env=unreachable),
    ]
    lines = [line for proc in runs for line in proc.stderr.splitlines()]
    assert all(proc.returncode != 0 for proc in runs)
    prefixed = re.compile(r"^kotomi-backup: (error|warning): \S")
    assert [line for line in lines if not prefixed.match(line)] == [], lines
    # The store's retry (a warning, with the wait) and the failure: both said, once each.
    assert any(line.startswith("kotomi-backup: warning: s3://b/p: ") for line in lines), lines


def test_the_readme_synopsis_names_every_flag_of_every_command() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("## The CLI", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    synopsis = {
        line.split()[1]: set(re.findall(r"--[a-z][a-z-]*", line.split("#", 1)[0]))
        for line in block.splitlines()
        if line.startswith("kotomi-backup ")
    }
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = {}
    for name, parser in commands.items():
        flags = {
            option
            for action in parser._actions
            for option in action.option_strings
            if option.startswith("--") and option not in ("--help", "--debug")
        }
        if flags - synopsis.get(name, set()):
            missing[name] = sorted(flags - synopsis.get(name, set()))
    assert missing == {}, f"README's synopsis lags --help: {missing}"
