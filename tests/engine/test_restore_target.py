"""What a restore may replace: a SQLite database, or nothing (a new file). Everything else is
refused with one line, force or not, and stays exactly as it was, with nothing written beside
it. Through the real CLI; the races through the engine's own steps, changed between them."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.errors import ConfigError
from kotomi_backup_dagster.engine.restore import (
    choose_backup,
    fetch_backup,
    staged_restore_path,
    swap_in,
)
from kotomi_backup_dagster.engine.restore_target import check_target
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import one_line_error, run_cli


def entries(*folders: Path) -> dict[str, tuple[object, ...]]:
    """Every entry of `folders`, as it is: a file's inode and bytes, a link's target, another
    entry's kind. Anything written, replaced or left beside a target changes it."""
    seen: dict[str, tuple[object, ...]] = {}
    for folder in folders:
        for entry in sorted(folder.iterdir()):
            st = entry.lstat()
            if stat.S_ISLNK(st.st_mode):
                seen[str(entry)] = ("link", os.readlink(entry))
            elif stat.S_ISREG(st.st_mode):
                seen[str(entry)] = ("file", st.st_ino, st.st_mode, entry.read_bytes())
            else:
                seen[str(entry)] = (stat.S_IFMT(st.st_mode), st.st_ino)
    return seen


@pytest.fixture
def place(kotomi_db: Path, tmp_path: Path) -> Iterator[Path]:
    """A backup of the database in data/, and a folder other/ with a text file and another
    SQLite database (neither is the restore's to touch)."""
    run_backup(BackupSettings.from_env(db_path=kotomi_db, urls=(str(tmp_path / "backups"),)))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("my notes, not a database\n")
    shutil.copyfile(kotomi_db, other / "other.db")
    yield tmp_path


Setup = Callable[[Path], Path]  # the test's folder -> the path given to restore --db


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays


def _link(name: str, to: str) -> Setup:
    def make(root: Path) -> Path:
        (root / "data" / name).symlink_to(to if to.startswith("/") else root / to)
        return root / "data" / name

    return make


def _made(name: str, make: Callable[[Path], object]) -> Setup:
    def setup(root: Path) -> Path:
        make(root / "data" / name)
        return root / "data" / name

    return setup


CASES: dict[str, tuple[Setup, str]] = {
    "a text file in another folder": (
        lambda root: root / "other" / "notes.txt",
        "it is not a SQLite database",
    ),
    "a text file beside the database": (
        _made("notes.txt", lambda p: p.write_text("beside it\n")),
        "it is not a SQLite database",
    ),
    "a symlink to a text file elsewhere": (
        _link("link.db", "other/notes.txt"),
        "it is a symlink",
    ),
    "a symlink to another database": (_link("link.db", "other/other.db"), "it is a symlink"),
    "a symlink to /dev/null": (_link("null.db", "/dev/null"), "it is a symlink"),
    "a dangling symlink": (_link("gone.db", "other/gone.db"), "it is a symlink"),
    "a hard link to another database": (
        lambda root: _hard_link(root / "other" / "other.db", root / "data" / "hard.db"),
        "has 2 names (hard links)",
    ),
    "a FIFO": (_made("fifo.db", os.mkfifo), "it is a FIFO (named pipe)"),
    "a socket": (_made("socket.db", _socket), "it is a socket"),
    "a folder": (_made("folder.db", os.mkdir), "it is a folder, not a file"),
    "SQLite's magic then something else": (
        _made("fake.db", lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)),
        "it is not a SQLite database",
    ),
    "the database's -wal name": (
        lambda root: root / "data" / "kotomi.db-wal",
        "it is the -wal file of",
    ),
    "a symlinked folder, then a text file": (
        lambda root: _folder_link(root) / "notes.txt",
        "it is not a SQLite database",
    ),
    "'..' out of the folder to a text file": (
        lambda root: root / "data" / ".." / "other" / "notes.txt",
        "it is not a SQLite database",
    ),
}


def _hard_link(existing: Path, new: Path) -> Path:
    os.link(existing, new)
    return new


def _folder_link(root: Path) -> Path:
    (root / "data" / "elsewhere").symlink_to(root / "other", target_is_directory=True)
    return root / "data" / "elsewhere"


@pytest.mark.parametrize("case", CASES)
def test_restore_refuses_what_is_no_database_and_changes_nothing(place: Path, case: str) -> None:
    setup, expected = CASES[case]
    target = setup(place)
    before = entries(place / "data", place / "other")
    proc = run_cli(
        "restore", "latest", "--db", str(target), "--from", str(place / "backups"),
        "--force", "--no-keep", timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_line_error(proc)
    assert expected in line, line
    assert entries(place / "data", place / "other") == before


def test_restore_refuses_a_device_and_writes_nothing_beside_it(place: Path) -> None:
    proc = run_cli("restore", "latest", "--db", "/dev/null", "--from", str(place / "backups"))
    assert proc.returncode == 2
    assert "/dev/null: it is a device, not a file" in one_line_error(proc)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert not [p for p in os.listdir("/dev") if p.startswith((".null.", "null."))]


def test_restore_still_replaces_the_database_and_creates_a_new_file(
    place: Path, kotomi_db: Path
) -> None:
    """The two things a restore is for, through a symlinked folder and `..` too (the kernel's
    path: the file at the end is checked, not the words of the path)."""
    backups = str(place / "backups")
    empty = place / "data" / "empty.db"
    empty.touch()  # an empty file: SQLite reads it as an empty database
    for target in (
        kotomi_db,
        place / "data" / "new.db",
        _folder_link(place) / "other.db",
        place / "data" / ".." / "other" / "new.db",
        empty,
    ):
        proc = run_cli("restore", "latest", "--db", str(target), "--from", backups, "--json")
        assert proc.returncode == 0, proc.stderr
        assert (target.parent.resolve() / target.name).read_bytes()[:16] == b"SQLite format 3\x00"
    assert (place / "data" / "elsewhere").is_symlink()  # the folder's link itself untouched


def test_the_copy_a_killed_restore_linked_is_no_other_name(place: Path, kotomi_db: Path) -> None:
    """A restore links the database to its `.before-restore-` name just before the rename: a
    kill between the two leaves the file with two names, and the next restore goes on."""
    left = kotomi_db.with_name("kotomi.db.before-restore-20261127T020000Z")
    os.link(kotomi_db, left)  # what the killed restore left
    proc = run_cli("restore", "latest", "--db", str(kotomi_db), "--from", str(place / "backups"))
    assert proc.returncode == 0, proc.stderr
    assert left.stat().st_nlink == 2  # the old file, under its two kept names
    os.link(left, place / "data" / "other-name.db")  # a name that is not ours to account for
    refused = run_cli("restore", "latest", "--db", str(left), "--from", str(place / "backups"))
    assert "has 3 names (hard links)" in one_line_error(refused)


def test_a_wrong_backup_id_names_the_newest_ids(kotomi_db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    settings = BackupSettings.from_env(db_path=kotomi_db, urls=(str(dest),))
    ids = [run_backup(settings).manifest.backup_id for _ in range(4)]
    proc = run_cli("restore", "20261127T020000Z-abc123", "--db", str(tmp_path / "new.db"),
                   "--from", str(dest))  # fmt: skip
    assert proc.returncode == 1
    line = one_line_error(proc)
    newest = ", ".join(sorted(ids, reverse=True)[:3])
    assert f"(the newest there: {newest})" in line, line
    assert line.endswith("`kotomi-backup list` shows every backup"), line
    assert sorted(ids)[0] not in line
    assert not (tmp_path / "new.db").exists()


# --- races: the target changes between its check and the rename -----------------------------


@pytest.fixture
def staged(place: Path, kotomi_db: Path) -> Callable[[Path], Path]:
    """`staged(target)`: the latest backup fetched and checked beside `target`, as a restore
    has it just before its swap."""

    def fetch(target: Path) -> Path:
        chosen = choose_backup([LocalStore(place / "backups")], "kotomi")
        return fetch_backup(chosen, staged_restore_path(target, chosen.manifest.backup_id))

    return fetch


def test_a_database_replaced_by_a_symlink_after_its_check_is_not_replaced(
    place: Path, kotomi_db: Path, staged: Callable[[Path], Path]
) -> None:
    restored = staged(kotomi_db)
    checked = check_target(kotomi_db)
    assert checked.replaces
    kotomi_db.rename(place / "data" / "moved.db")
    kotomi_db.symlink_to(place / "other" / "notes.txt")
    before = entries(place / "data", place / "other")
    with pytest.raises(ConfigError, match="was replaced or removed while the restore ran"):
        swap_in(restored, kotomi_db, checked=checked, force=True)
    assert entries(place / "data", place / "other") == before


def test_a_new_file_that_appears_after_the_check_is_not_replaced(
    place: Path, staged: Callable[[Path], Path]
) -> None:
    target = place / "data" / "new.db"
    restored = staged(target)
    checked = check_target(target)
    assert not checked.replaces
    target.write_text("written meanwhile\n")
    before = entries(place / "data")
    with pytest.raises(ConfigError, match="appeared while the restore ran"):
        swap_in(restored, target, checked=checked)
    assert entries(place / "data") == before


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_written(
    place: Path, kotomi_db: Path, staged: Callable[[Path], Path]
) -> None:
    target = place / "data" / "new.db"
    restored = staged(target)
    checked = check_target(target)
    (place / "data").rename(place / "data-moved")
    (place / "data").symlink_to(place / "other", target_is_directory=True)
    before = entries(place / "other", place / "data-moved")
    with pytest.raises(ConfigError, match="changed while the restore ran"):
        swap_in(place / "data-moved" / restored.name, target, checked=checked)
    assert entries(place / "other", place / "data-moved") == before
