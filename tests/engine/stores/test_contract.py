"""The store contract: what every destination (a local folder, S3, GCS) does alike, one suite
run against each (as restic's backend tests and Litestream's replica client tests do).

The objects are checked from outside our code too: `Backend.list_keys` lists them with the
provider's own client (or the file system). What only one backend does (S3's multipart parts
and server-side encryption, GCS's resumable chunks, the local store's symlink and partial-file
rules) is tested in that backend's file.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.backup import run_backup
from kotomi_backup_dagster.engine.errors import BackupError, ConfigError
from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.stores import (
    BackupStore,
    ObjectExists,
    ObjectNotFound,
    open_store,
)
from kotomi_backup_dagster.engine.stores.base import LIST_FROM
from tests.conftest import AWS_SECRET, Proxies, one_line_error, run_cli
from tests.engine.stores.conftest import (
    Backend,
    check_download,
    create_only_gcs,
    download,
    route,
    settings,
)

# Requests one backup's upload makes: S3 PutObject + HeadObject (the checksum confirmed) and
# the manifest's PutObject; GCS the archive's upload (its checksums come back with it) and the
# manifest's; a local folder counts a write each.
BACKUP_REQUESTS = {"file": 2, "s3": 3, "gs": 2}


def test_a_backup_lands_in_the_agreed_layout_and_reads_back(
    kotomi_db: Path, backend: Backend
) -> None:
    url = backend.url("site/backups")
    result = run_backup(settings(kotomi_db, url))
    manifest = result.manifest
    [outcome] = result.outcomes
    assert outcome.ok and outcome.url == url
    assert outcome.requests == BACKUP_REQUESTS[backend.scheme]

    assert backend.list_keys() == [
        f"site/backups/kotomi/{manifest.backup_id}/kotomi.db.zst",
        f"site/backups/kotomi/{manifest.backup_id}/manifest.json",
    ]
    store = open_store(url)
    listing = list_backups(store, "kotomi")
    assert [m.backup_id for m in listing.backups] == [manifest.backup_id]
    assert listing.incomplete == [] and listing.unreadable == []
    check_download(store, listing.backups[0])


def test_a_file_put_reads_back_whole_and_says_what_landed(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(300 * 1024 + 5)
    source = tmp_path / "a.db.zst"
    source.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    store = open_store(backend.url("p"))
    stored = store.put_file("kotomi/x/a.db.zst", source, sha256=sha256)
    assert (stored.key, stored.size, stored.sha256) == ("kotomi/x/a.db.zst", len(data), sha256)
    assert stored.requests >= 1
    assert download(store, "kotomi/x/a.db.zst") == data
    assert store.get_bytes("kotomi/x/a.db.zst") == data
    assert backend.list_keys() == ["p/kotomi/x/a.db.zst"]


def test_a_damaged_source_is_refused_and_nothing_is_left_at_its_key(
    backend: Backend, tmp_path: Path
) -> None:
    source = tmp_path / "a.db.zst"
    source.write_bytes(os.urandom(64 * 1024))
    store = open_store(backend.url("p"))
    with pytest.raises(BackupError, match="damaged"):
        store.put_file("kotomi/x/a.db.zst", source, sha256="0" * 64)
    assert backend.list_keys() == []
    assert store.stat_objects(["kotomi/x/a.db.zst"]) == {}
    with pytest.raises(ObjectNotFound):
        store.open_read("kotomi/x/a.db.zst")


def test_an_object_is_written_once_and_a_missing_one_is_not_found(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Create-only, enforced by the store: other bytes at a taken key are refused and the
    first object stays; the same bytes again (a re-run, a retry whose answer was lost)
    succeed. On GCS, fake-gcs-server (gcp-storage-emulator ignores ifGenerationMatch)."""
    if backend.scheme == "gs":
        backend = create_only_gcs(request)
    store = open_store(backend.url("p"))
    first = store.put_bytes("kotomi/a/manifest.json", b'{"v": 1}')
    with pytest.raises(ObjectExists, match="written once"):
        store.put_bytes("kotomi/a/manifest.json", b'{"v": 22}')
    again = store.put_bytes("kotomi/a/manifest.json", b'{"v": 1}')
    assert again.version == first.version and again.size == 8
    assert store.get_bytes("kotomi/a/manifest.json") == b'{"v": 1}'
    for size in (10, 300 * 1024):  # one request, and S3 multipart / GCS resumable below
        source = tmp_path / f"a-{size}"
        source.write_bytes(os.urandom(size))
        sha = hashlib.sha256(source.read_bytes()).hexdigest()
        stored = store.put_file(f"kotomi/a/{size}.zst", source, sha256=sha)
        assert store.put_file(f"kotomi/a/{size}.zst", source, sha256=sha).version == stored.version
        other = tmp_path / f"b-{size}"
        other.write_bytes(os.urandom(size))
        with pytest.raises(ObjectExists, match="written once"):
            store.put_file(
                f"kotomi/a/{size}.zst", other, sha256=hashlib.sha256(other.read_bytes()).hexdigest()
            )
        assert download(store, f"kotomi/a/{size}.zst") == source.read_bytes()
    assert backend.list_keys() == [
        "p/kotomi/a/10.zst",
        "p/kotomi/a/307200.zst",
        "p/kotomi/a/manifest.json",
    ]
    with pytest.raises(ObjectNotFound):
        store.get_bytes("kotomi/a/missing.json")
    with pytest.raises(ObjectNotFound):
        store.open_read("kotomi/missing/manifest.json")


def test_a_key_with_dot_parts_is_refused_for_every_operation(backend: Backend) -> None:
    """A manifest read from the store names its objects' keys: untrusted input that must not
    reach outside the store's prefix, on a disk or in a bucket."""
    store = open_store(backend.url("p"))
    store.put_bytes("outside", b"keep")  # what '../outside' from p/kotomi/ would reach
    for key in ("../outside", "kotomi/../../outside", "kotomi/./x"):
        with pytest.raises(ConfigError, match="would leave the store"):
            store.put_bytes(key, b"x")
        with pytest.raises(ConfigError, match="would leave the store"):
            store.get_bytes(key)
        with pytest.raises(ConfigError, match="would leave the store"):
            store.open_read(key)
        with pytest.raises(ConfigError, match="would leave the store"):
            store.delete(key)
    assert backend.list_keys() == ["p/outside"]


def test_children_listing_and_directory_delete(backend: Backend) -> None:
    store = open_store(backend.url("root"))
    for key in ("kotomi/a/manifest.json", "kotomi/a/drills/1.json", "kotomi/b/x", "other/c"):
        store.put_bytes(key, b"{}")
    assert store.list_children("kotomi") == ["a", "b"]
    assert store.list_children("kotomi/a") == ["drills", "manifest.json"]
    assert store.list_children("nothing") == []
    assert store.get_bytes("kotomi/b/x") == b"{}"
    with pytest.raises(ObjectNotFound):
        store.get_bytes("kotomi/b/missing")
    with pytest.raises(ObjectNotFound):
        store.open_read("kotomi/b/missing")
    store.delete("kotomi/a")
    assert store.list_children("kotomi") == ["b"]
    assert open_store(backend.root).list_children("root") == ["kotomi", "other"]
    assert backend.list_keys() == ["root/kotomi/b/x", "root/other/c"]


def test_a_prefix_of_a_prefix_is_not_deleted_and_a_missing_key_deletes_nothing(
    backend: Backend,
) -> None:
    store = open_store(backend.root)
    store.put_bytes("kotomi/20260101T000000Z-aaaaaa/manifest.json", b"1")
    store.put_bytes("kotomi/20260101T000000Z-aaaaaa-other/manifest.json", b"2")
    store.delete("kotomi/20260101T000000Z-aaaaaa")
    assert store.list_children("kotomi") == ["20260101T000000Z-aaaaaa-other"]
    store.delete("kotomi/never-there")
    assert backend.list_keys() == ["kotomi/20260101T000000Z-aaaaaa-other/manifest.json"]


def test_stat_objects_tells_missing_from_present(backend: Backend) -> None:
    store: BackupStore = open_store(backend.url("prod"))
    store.put_bytes("kotomi/a/one", b"1")
    store.put_bytes("kotomi/a/two", b"22")
    for n in range(LIST_FROM):  # a folder answered by one listing
        store.put_bytes(f"kotomi/packs/p{n}", b"x" * n)
    keys = ["kotomi/a/one", "kotomi/a/two", "kotomi/a/gone", "kotomi/nothing/here"]
    keys += [f"kotomi/packs/p{n}" for n in range(LIST_FROM + 1)]
    found = store.stat_objects(keys)
    assert {k: v.size for k, v in found.items()} == {
        "kotomi/a/one": 1,
        "kotomi/a/two": 2,
        **{f"kotomi/packs/p{n}": n for n in range(LIST_FROM)},
    }
    assert all(v.key == k for k, v in found.items())
    # A sha256 is given only where the store has it for free, and then it is the right one.
    assert found["kotomi/a/one"].sha256 in ("", hashlib.sha256(b"1").hexdigest())


def test_a_usable_destination_passes_preflight_and_a_sweep_keeps_finished_objects(
    backend: Backend, tmp_path: Path
) -> None:
    store = open_store(backend.url("p"))
    store.preflight()
    assert backend.list_keys() == [], "the preflight leaves nothing behind"
    store.put_bytes("kotomi/a/manifest.json", b"{}")
    source = tmp_path / "a.db.zst"
    source.write_bytes(b"zstd")
    store.put_file("kotomi/a/a.db.zst", source, sha256=hashlib.sha256(b"zstd").hexdigest())
    assert store.sweep_partials("kotomi/a", before=time.time() + 3600) == []
    assert backend.list_keys() == ["p/kotomi/a/a.db.zst", "p/kotomi/a/manifest.json"]


def test_an_unusable_destination_fails_at_once_in_one_line(
    kotomi_db: Path,
    backend: Backend,
    tmp_path: Path,
    proxy_for: Proxies,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A local folder where a file stands, a bucket that does not exist: one line naming the
    destination, exit 2 from the CLI, a single request (no retries), no secret shown."""
    if backend.scheme == "file":
        (tmp_path / "a-file").write_bytes(b"")
        url, reason = f"file://{tmp_path}/a-file/backups", "not usable"
        proxy = None
    else:
        url, reason = f"{backend.scheme}://no-such-bucket-kotomi/backups", "does not exist"
        assert backend.server is not None
        proxy = proxy_for(backend.server)
        route(proxy, backend.scheme, monkeypatch)
    with pytest.raises(ConfigError) as caught:
        run_backup(settings(kotomi_db, url))
    message = str(caught.value)
    assert "\n" not in message
    assert url in message and reason in message
    assert AWS_SECRET not in message
    if proxy is not None:
        assert len(proxy.requests()) == 1, [r.target for r in proxy.requests()]
        proxy.clear()

    proc = run_cli("backup", "--db", str(kotomi_db), "--to", url)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert url in line and reason in line
    assert AWS_SECRET not in proc.stderr + proc.stdout
    if proxy is not None:
        assert len(proxy.requests()) == 1, [r.target for r in proxy.requests()]


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_credentials_in_the_url_are_refused_without_echoing_them(scheme: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(f"{scheme}://AKIAXX:hunter2@bucket/prefix")
    assert "hunter2" not in str(caught.value)
    assert f"{scheme}://bucket/prefix" in str(caught.value)
