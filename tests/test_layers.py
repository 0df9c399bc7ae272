"""The layers hold: the engine and the CLI over it import neither Dagster nor the Dagster layer
nor the demo data (so backups, restores and disaster recovery work while Dagster is down), and
the demo data imports nothing of Dagster. Each is checked in a fresh interpreter, so what a
module imports on the way counts too."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

IMPORTS = """
import importlib, json, pkgutil, sys
for package in sys.argv[1:]:
    module = importlib.import_module(package)
    for found in pkgutil.walk_packages(getattr(module, "__path__", []), package + "."):
        if not found.name.endswith(".__main__"):  # running it is not importing it
            importlib.import_module(found.name)
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(*packages: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS, *packages], capture_output=True, text=True, check=True
    )
    names: list[str] = json.loads(done.stdout)
    return names


@pytest.mark.parametrize(
    ("packages", "forbidden"),
    [
        (
            ["kotomi_backup_dagster.engine", "kotomi_backup_dagster.cli"],
            ("dagster", "kotomi_backup_dagster.defs", "kotomi_backup_dagster.demo"),
        ),
        (["kotomi_backup_dagster.demo"], ("dagster", "kotomi_backup_dagster.defs")),
    ],
    ids=["engine-and-cli", "demo"],
)
def test_a_layer_imports_nothing_above_it(packages: list[str], forbidden: tuple[str, ...]) -> None:
    loaded = imported_by(*packages)
    assert any(name.startswith(packages[0]) for name in loaded)
    wrong = [n for n in loaded if any(n == f or n.startswith(f + ".") for f in forbidden)]
    assert wrong == []
