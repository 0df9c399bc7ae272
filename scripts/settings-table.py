"""Write README's "Configure" table from the settings table (engine/config.py).

python scripts/settings-table.py           rewrite the table in README.md (make settings-table)
python scripts/settings-table.py --check   exit 1, naming the rows that differ, when it is stale
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from kotomi_backup_dagster.engine.config import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- settings table: generated from engine/config.py by `make settings-table` -->\n"
END = "<!-- end of the settings table -->\n"


def main(argv: list[str]) -> int:
    text = README.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        print(f"README.md: expected one {BEGIN.strip()} ... {END.strip()} block", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN)
    current, tail = rest.split(END)
    wanted = markdown_table()
    if current == wanted:
        return 0
    if "--check" in argv:
        diff = difflib.unified_diff(
            current.splitlines(), wanted.splitlines(), "README.md", "engine/config.py", lineterm=""
        )
        print("\n".join(diff), file=sys.stderr)
        print("README's Configure table is stale: run `make settings-table`", file=sys.stderr)
        return 1
    README.write_text(head + BEGIN + wanted + END + tail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
