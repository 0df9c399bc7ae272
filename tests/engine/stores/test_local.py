"""What only the local store does: keys never leave its folder, nothing below it is followed
through a symlink, and the temp file of a write killed mid-way is swept (and never listed).
What every store does is in test_contract.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.stores import LocalStore, UnreadableObject

# Copies a named pipe into the store: it blocks once the pipe runs dry, mid-way.
WRITE_FROM_PIPE = """
import sys
from pathlib import Path
from kotomi_backup_dagster.engine.stores import LocalStore
LocalStore(Path(sys.argv[1])).put_file("kotomi/a/a.db.zst", Path(sys.argv[2]), sha256="0" * 64)
"""


def test_a_folder_that_is_a_symlink_is_never_listed_read_written_or_deleted_through(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "b1").mkdir(parents=True)
    (elsewhere / "b1" / "manifest.json").write_bytes(b"{}")
    store = LocalStore(tmp_path / "store")
    store.put_bytes("kotomi/real/manifest.json", b"{}")
    (tmp_path / "store" / "linked").symlink_to(elsewhere)
    for through_the_link in (
        lambda: store.list_children("linked/b1"),
        lambda: store.get_bytes("linked/b1/manifest.json"),
        lambda: store.put_bytes("linked/b1/manifest.json", b"overwritten"),
        lambda: store.delete("linked/b1"),
    ):
        with pytest.raises(UnreadableObject, match="is a symlink"):
            through_the_link()
    assert store.stat_objects(["linked/b1/manifest.json"]) == {}
    assert store.list_children("") == ["kotomi", "linked"]  # named, so a listing can say so
    assert (elsewhere / "b1" / "manifest.json").read_bytes() == b"{}"


def test_the_temp_file_of_a_killed_write_is_never_listed_and_is_swept_once_old(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    pipe = tmp_path / "archive.pipe"
    os.mkfifo(pipe)
    writer = subprocess.Popen([sys.executable, "-c", WRITE_FROM_PIPE, str(root), str(pipe)])
    folder = root / "kotomi" / "a"
    try:
        with pipe.open("wb") as feed:
            feed.write(os.urandom(64 * 1024))
            feed.flush()
            while not (folder.is_dir() and any(folder.iterdir())):  # pytest's timeout ends a hang
                assert writer.poll() is None, "the writer ended before its write began"
                time.sleep(0.01)
            writer.send_signal(signal.SIGKILL)
            writer.wait()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    [partial] = [p.name for p in folder.iterdir()]
    assert partial.startswith(".a.db.zst.") and partial.endswith(".partial")

    store = LocalStore(root)
    assert store.list_children("kotomi/a") == []
    assert store.stat_objects(["kotomi/a/a.db.zst"]) == {}
    written_at = (folder / partial).stat().st_mtime
    assert store.sweep_partials("kotomi/a", before=written_at - 1) == []  # maybe still live
    assert store.sweep_partials("kotomi/a", before=written_at + 1) == [partial]
    assert list(folder.iterdir()) == []
