"""Every KOTOMI_* setting goes through the one table (engine/config.py), and what is built from
it cannot drift: README's Configure table, the CLI's --help, the secrets redaction hides, the
Dagster resources' EnvVars."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
from dagster import EnvVar

from kotomi_backup_dagster.cli import build_parser
from kotomi_backup_dagster.defs.backup.resources import backup_resource_from_env
from kotomi_backup_dagster.engine import config
from kotomi_backup_dagster.engine.redaction import environment_secrets

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "kotomi_backup_dagster"
TABLE = PACKAGE / "engine" / "config.py"
# Modules that may look at the environment: the table, and reads of what is not ours.
ENVIRONMENT_READERS = {
    "engine/config.py": "the table",
    "engine/redaction.py": "every variable's value, to hide secrets",
    "engine/settings.py": "XDG_CACHE_HOME, for the default staging folder",
    "engine/stores/__init__.py": "GOOGLE_CLOUD_PROJECT",
    "engine/stores/gcs.py": "Google's tracing switch",
    "defs/envvars.py": "variables outside the table (AWS_*, a defs.yaml's {env: NAME})",
    "cli/output.py": "COLUMNS, the width the tables fit",
}
SETTING_NAME = re.compile(r"\bKOTOMI_[A-Z0-9_]*[A-Z0-9]")
# env.get, os.getenv, environ.pop/setdefault, EnvVar and EnvVar.int: what reads a variable.
READING_CALLS = {"get", "getenv", "pop", "setdefault", "EnvVar", "int"}


def modules() -> list[tuple[str, str]]:
    return [(str(p.relative_to(PACKAGE)), p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))]


def names_a_setting(node: ast.AST) -> bool:
    """A literal (or f-string) that starts with KOTOMI_: a variable's name."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.startswith("KOTOMI_")
    if isinstance(node, ast.JoinedStr) and node.values:
        return names_a_setting(node.values[0])
    return False


def stray_reads(source: str) -> list[str]:
    """Calls like env.get("KOTOMI_X"), os.getenv(f"KOTOMI_{k}"), EnvVar("KOTOMI_X") and
    subscripts like environ["KOTOMI_X"]: reads of a setting by name, not through the table."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and names_a_setting(node.args[0]):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in READING_CALLS:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and names_a_setting(node.slice):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_setting_is_read_outside_the_table() -> None:
    stray = {
        name: reads
        for name, source in modules()
        if name != "engine/config.py" and (reads := stray_reads(source))
    }
    assert stray == {}
    readers = {
        name
        for name, source in modules()
        if re.search(r"\bos\.environ\b|\bgetenv\(|EnvVar(\.int)?\(", source)
    }
    assert readers <= set(ENVIRONMENT_READERS) | {"component.py"}, readers
    # The component names its variables in YAML ({env: NAME}); it resolves them, never
    # os.environ, and never a KOTOMI_ literal (checked above).
    assert "os.environ" not in (PACKAGE / "component.py").read_text()


def test_the_stray_read_check_finds_what_it_looks_for() -> None:
    source = (
        'import os\nos.environ.get("KOTOMI_BACKUP_URL")\nenv["KOTOMI_DB_PATH"]\n'
        'EnvVar.int(f"KOTOMI_BACKUP_KEEP_{kind}")\nraise ValueError("KOTOMI_BACKUP_URL: bad")\n'
    )
    assert [r.split(":")[0] for r in stray_reads(source)] == ["line 2", "line 3", "line 4"]


def test_every_variable_the_package_names_is_in_the_table() -> None:
    python_names: set[str] = set()
    mentioned: dict[str, set[str]] = {}
    for name, source in modules():
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME and token.string.startswith("KOTOMI_"):
                python_names.add(token.string)  # KOTOMI_TABLES and such: constants, not settings
            elif token.type in (tokenize.STRING, tokenize.COMMENT):
                for found in SETTING_NAME.findall(token.string):
                    mentioned.setdefault(found, set()).add(name)
    known = set(config.BY_NAME) | config.DEPLOYMENT_VARIABLES
    # KOTOMI_BACKUP_KEEP_* and the like: a prefix of table names.
    unknown = {
        n: where
        for n, where in mentioned.items()
        if n not in known
        and n not in python_names
        and not any(k.startswith(n + "_") for k in known)
    }
    assert unknown == {}


def test_readme_configure_table_is_the_settings_table() -> None:
    checked = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "settings-table.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    readme = (REPO / "README.md").read_text()
    for s in config.SETTINGS:
        assert f"| `{s.name}` | {s.value} |" in readme


def test_cli_help_names_each_variable_the_cli_reads_with_its_default() -> None:
    parser = build_parser()
    top = parser.format_help()
    for s in config.SETTINGS:
        assert (s.name in top) == (not s.dagster_only), s.name
    backup = next(
        a
        for a in parser._subparsers._group_actions[0].choices.values()
        if a.prog.endswith("backup")
    ).format_help()
    assert "KOTOMI_BACKUP_FORMAT, else full" in " ".join(backup.split())


@pytest.mark.parametrize("setting", config.SETTINGS, ids=lambda s: s.name)
def test_the_secrets_of_the_table_are_the_values_redaction_hides(
    setting: config.Setting[object],
) -> None:
    value = (
        "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
        if setting is config.AGE_IDENTITY
        else "https://hooks.example.test/services/T000/B000/abcdefghijklmnopqrstuvwx"
        if setting is config.ALERT_WEBHOOK_URL
        else "a-value-long-enough-to-be-a-secret"
    )
    assert (value in environment_secrets({setting.name: value})) == setting.secret


def test_settings_set_where_the_code_location_loads_are_envvars_in_the_resource() -> None:
    env = {
        config.SNAPSHOT_TIMEOUT.name: "45",
        config.KEEP_STAGED.name: "2",
        config.RETRIES.name: "3",
        config.VERIFY.name: "full",
    }
    resource = backup_resource_from_env(environ=env)
    named = {
        field: getattr(getattr(resource, field), "env_var_name", None)
        for field in ("snapshot_timeout", "keep_staged", "client_retries", "verify_mode")
    }
    assert named == {
        "snapshot_timeout": config.SNAPSHOT_TIMEOUT.name,
        "keep_staged": config.KEEP_STAGED.name,
        "client_retries": config.RETRIES.name,
        "verify_mode": config.VERIFY.name,
    }
    assert isinstance(resource.keep_staged, EnvVar.int(config.KEEP_STAGED.name).__class__)
    assert resource.profile == config.PROFILE.default  # unset: the table's default
