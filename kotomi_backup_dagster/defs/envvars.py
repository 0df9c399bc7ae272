"""The settings table (engine/config.py) in Dagster's terms: resource fields and `EnvVar`s.

A resource field takes its default and description from the table (`setting_field`). A
variable set where the code location loads becomes an `EnvVar` (`env_fields`): the UI shows
its name, never its value, and each run reads the value from its own environment. Values
are checked by the table's rules, at load (`config.read_all`) and when a run builds the
engine's objects from the resource.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster import EnvVar
from pydantic import Field

from ..engine.config import Setting

_TABLE_DEFAULT: Any = object()


def setting_field(setting: Setting[Any], default: Any = _TABLE_DEFAULT, note: str = "") -> Any:
    """A resource field for `setting`: the table's default (or `default`, where the field
    holds it in another shape) and its help, naming the variable."""
    value = setting.default if default is _TABLE_DEFAULT else default
    help_text = setting.help.replace("`", "")
    return Field(default=value, description=f"{help_text}{note} ({setting.name}).")


def env_var(setting: Setting[Any]) -> Any:
    """The variable as a reference Dagster resolves in each run (an int for whole numbers)."""
    return EnvVar.int(setting.name) if setting.whole else EnvVar(setting.name)


def env_fields(
    fields: Mapping[str, Setting[Any]], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """An `EnvVar` for each of `fields` ({resource field: setting}) whose variable is set;
    the others keep the field's default."""
    return {field: env_var(s) for field, s in fields.items() if s.is_set(environ)}


def env_var_if_set(name: str) -> Any:
    """A variable outside the table (AWS_REGION, a defs.yaml's `{env: NAME}`) as an `EnvVar`
    when it is set where the code location loads, else None (a run would fail resolving it)."""
    return EnvVar(name) if os.environ.get(name) else None


def resolved(value: Any) -> Any:
    """A resource field's value now (an EnvVar is read from this process's environment)."""
    # EnvVar (a str) and EnvVar.int (an int) both name their variable.
    return value.get_value() if hasattr(value, "env_var_name") else value
