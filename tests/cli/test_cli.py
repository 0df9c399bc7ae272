"""The real `kotomi-backup` command: exit codes, one-line errors, nothing lost on bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from kotomi_backup_dagster.demo import generate_demo_database
from tests.conftest import AgeKey, kill_cli_after, one_line_error, run_cli


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_backup_then_list_and_verify_as_json(kotomi_db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    made = run_cli("backup", "--db", str(kotomi_db), "--to", f"file://{dest}", "--json")
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    backup_id = result["backup_id"]
    assert result["destinations"][0]["ok"] is True
    listed = run_cli("list", "--to", str(dest), "--json")
    assert listed.returncode == 0, listed.stderr
    ids = [b["backup_id"] for b in json.loads(listed.stdout)["destinations"][0]["backups"]]
    assert ids == [backup_id]
    checked = run_cli("verify", str(dest / "kotomi" / backup_id), "--full", "--json")
    assert checked.returncode == 0, checked.stdout
    assert json.loads(checked.stdout)["ok"] is True
    # A bad retention value is refused by list as by prune: one line, exit 2.
    for command in ("list", "prune"):
        bad = run_cli(command, "--to", str(dest), env={"KOTOMI_BACKUP_KEEP_HOURLY": "abc"})
        assert bad.returncode == 2
        assert "KOTOMI_BACKUP_KEEP_HOURLY 'abc': give a whole number" in one_line_error(bad)
    assert tree(dest / "kotomi") == [
        backup_id,
        f"{backup_id}/kotomi.db.zst",
        f"{backup_id}/manifest.json",
    ]


def test_environment_supplies_the_defaults(kotomi_db: Path, tmp_path: Path) -> None:
    env = {
        "KOTOMI_DB_PATH": str(kotomi_db),
        "KOTOMI_BACKUP_URL": str(tmp_path / "b"),
        "KOTOMI_BACKUP_NAME": "blog",
    }
    assert run_cli("backup", env=env).returncode == 0
    listed = json.loads(run_cli("list", "--json", env=env).stdout)
    assert listed["name"] == "blog"
    assert len(listed["destinations"][0]["backups"]) == 1


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("missing file", 2, "database not found"),
        ("not a database", 2, "not an SQLite database"),
        ("empty file", 2, "database is empty"),
        ("unwritable destination", 2, "not usable"),
        ("unknown scheme", 2, "unknown destination scheme"),
        ("bad age recipient", 2, "not an age public key"),
        ("no destination", 2, "no destination given"),
        ("bad name", 2, "KOTOMI_BACKUP_NAME '../escape': use 1-64 letters"),
        ("blank age recipients", 2, "holds no key"),
        ("bad snapshot timeout", 2, "positive number of seconds"),
    ],
)
def test_bad_input_gives_one_line_and_stores_nothing(
    case: str, code: int, words: str, kotomi_db: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "backups"
    dest.mkdir()
    (dest / "keep.txt").write_text("an operator's file")
    db, to, env = str(kotomi_db), str(dest), {}
    if case == "missing file":
        db = str(tmp_path / "nope.db")
    elif case == "not a database":
        db = str(tmp_path / "notes.txt")
        Path(db).write_text("hello, this is not SQLite\n" * 10)
    elif case == "empty file":
        db = str(tmp_path / "empty.db")
        Path(db).touch()
    elif case == "unwritable destination":
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        to = str(blocker / "backups")  # root can write anywhere, but not under a file
    elif case == "unknown scheme":
        to = "ftp://user:hunter2@example.com/backups"
    elif case == "bad age recipient":
        env = {"KOTOMI_BACKUP_AGE_RECIPIENTS": "age1notakey"}
    elif case == "bad name":
        env = {"KOTOMI_BACKUP_NAME": "../escape"}
    elif case == "blank age recipients":  # set means encrypt: never plaintext by accident
        env = {"KOTOMI_BACKUP_AGE_RECIPIENTS": " , "}
    elif case == "bad snapshot timeout":  # nan would switch the deadline off
        env = {"KOTOMI_BACKUP_SNAPSHOT_TIMEOUT": "nan"}
    args = ["backup", "--db", db] + ([] if case == "no destination" else ["--to", to])
    before = kotomi_db.read_bytes()
    proc = run_cli(*args, env=env)
    assert proc.returncode == code, proc.stderr
    line = one_line_error(proc)
    assert words in line
    assert "hunter2" not in proc.stderr
    assert tree(dest) == ["keep.txt"]
    assert kotomi_db.read_bytes() == before


def test_a_misspelt_setting_is_named_with_the_one_meant(
    kotomi_db: Path, tmp_path: Path, age_key: AgeKey
) -> None:
    """A typo must not pass in silence: RECIPIENT for RECIPIENTS would store plaintext."""
    dest = tmp_path / "backups"
    env = {"KOTOMI_BACKUP_AGE_RECIPIENT": age_key.recipient, "KOTOMI_BACKUP_ZZZ": "1"}
    made = run_cli("backup", "--db", str(kotomi_db), "--to", str(dest), env=env)
    assert made.returncode == 0, made.stderr
    warnings = [line for line in made.stderr.splitlines() if "warning" in line]
    assert warnings[0] == (
        "kotomi-backup: warning: KOTOMI_BACKUP_AGE_RECIPIENT is not a setting and is ignored: "
        "did you mean KOTOMI_BACKUP_AGE_RECIPIENTS?"
    )
    assert warnings[1].startswith(
        "kotomi-backup: warning: KOTOMI_BACKUP_ZZZ is not a setting and is ignored: "
    )
    assert len(warnings) == 2
    # The deployment's own variables are known.
    quiet = run_cli("list", "--to", str(dest), env={"KOTOMI_BACKUP_RUN_NETWORK": "host"})
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_locked_database_times_out_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    generate_demo_database(db, size_bytes=100_000, seed=1)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("BEGIN EXCLUSIVE")  # a rollback-journal writer holds off every reader
    try:
        proc = run_cli(
            "backup",
            "--db",
            str(db),
            "--to",
            str(tmp_path / "b"),
            env={"KOTOMI_BACKUP_SNAPSHOT_TIMEOUT": "1"},
        )
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert proc.returncode == 1
    assert "did not finish within 1 s" in one_line_error(proc)
    assert tree(tmp_path / "b") == []


def test_verify_reports_a_tampered_archive_and_a_wrong_key(
    kotomi_db: Path, tmp_path: Path, age_key: AgeKey
) -> None:
    dest = tmp_path / "backups"
    env = {"KOTOMI_BACKUP_AGE_RECIPIENTS": age_key.recipient}
    made = json.loads(
        run_cli("backup", "--db", str(kotomi_db), "--to", str(dest), "--json", env=env).stdout
    )
    backup_dir = dest / "kotomi" / made["backup_id"]
    good = run_cli(
        "verify", str(backup_dir), env={"KOTOMI_BACKUP_AGE_IDENTITY": str(age_key.identity_file)}
    )
    assert good.returncode == 0, good.stderr + good.stdout

    other = tmp_path / "other-key.txt"
    import pyrage

    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    wrong = run_cli("verify", str(backup_dir), env={"KOTOMI_BACKUP_AGE_IDENTITY": str(other)})
    assert wrong.returncode == 2
    line = one_line_error(wrong)
    assert "does not match" in line
    assert "AGE-SECRET-KEY" not in wrong.stderr + wrong.stdout

    archive = backup_dir / "kotomi.db.zst.age"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    tampered = run_cli(
        "verify", str(backup_dir), env={"KOTOMI_BACKUP_AGE_IDENTITY": str(age_key.identity_file)}
    )
    assert tampered.returncode == 1
    assert "Traceback" not in tampered.stderr


def test_killed_backup_leaves_nothing_listed(tmp_path: Path) -> None:
    """SIGKILL at several points of a real backup: never a torn backup in the listing."""
    db = tmp_path / "big.db"
    generate_demo_database(db, size_bytes=40_000_000, seed=3)
    dest = tmp_path / "backups"
    for delay in (0.2, 0.5, 0.9, 1.4):
        kill_cli_after(delay, "backup", "--db", str(db), "--to", str(dest))
        listed = json.loads(run_cli("list", "--to", str(dest), "--json").stdout)
        for backup in listed["destinations"][0]["backups"]:
            # Whatever is listed is whole: its archive is there with the right size.
            archive = dest / backup["archive"]["key"]
            assert archive.stat().st_size == backup["archive"]["size"]
            checked = run_cli("verify", str(archive.parent))
            assert checked.returncode == 0, checked.stdout + checked.stderr
    after = run_cli("backup", "--db", str(db), "--to", str(dest), "--json")
    assert after.returncode == 0, after.stderr


def test_demo_makes_the_seeded_database_backs_it_up_and_keeps_it_on_a_second_run(
    tmp_path: Path,
) -> None:
    demo = tmp_path / "demo"
    made = run_cli("demo", "--dir", str(demo), "--size-mb", "1", "--seed", "3", "--json")
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    db = demo / "kotomi.db"
    assert result["db"] == str(db) and result["backups"] == str(demo / "backups")
    assert len(result["manifest"]["tables"]) == 14
    # The same rows as the library's generator with that seed: the demo is reproducible.
    same = generate_demo_database(tmp_path / "same.db", size_bytes=1_000_000, seed=3)
    assert same.path.read_bytes() == db.read_bytes()
    listed = run_cli("list", "--to", str(demo / "backups"), "--json")
    ids = [b["backup_id"] for b in json.loads(listed.stdout)["destinations"][0]["backups"]]
    assert ids == [result["backup_id"]]

    again = run_cli("demo", "--dir", str(demo), "--db-only")
    assert again.returncode == 0, again.stderr
    assert f"using the existing demo database {db}" in again.stderr
    assert db.read_bytes() == same.path.read_bytes()
