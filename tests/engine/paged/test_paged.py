"""The paged format: only changed pages are stored, every backup restores exactly."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kotomi_backup_dagster.engine.backup import (
    run_backup,
    stage_archive,
    stage_snapshot,
    stage_upload,
    stage_verify,
)
from kotomi_backup_dagster.engine.errors import BackupError, ConfigError
from kotomi_backup_dagster.engine.manifest import Manifest
from kotomi_backup_dagster.engine.paged.pagemap import PageMap, build_page_map
from kotomi_backup_dagster.engine.prune import prune_store
from kotomi_backup_dagster.engine.restore import restore_database
from kotomi_backup_dagster.engine.retention import RetentionPolicy
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import LocalStore
from tests.conftest import AgeKey, kotomi_requests, one_line_error, run_cli


def settings(db: Path, store: Path, **extra: object) -> BackupSettings:
    return BackupSettings.from_env(db_path=db, urls=(str(store),), backup_format="paged", **extra)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack_files(store: Path, name: str = "kotomi") -> set[str]:
    packs = store / name / "packs"
    return {p.name for p in packs.iterdir()} if packs.is_dir() else set()


def restore_to(store: Path, target: Path, which: str = "latest", **kw: object) -> Manifest:
    target.parent.mkdir(parents=True, exist_ok=True)
    result = restore_database([LocalStore(store)], "kotomi", target, which=which, **kw)  # type: ignore[arg-type]
    assert sha256_of(target) == result.manifest.db_sha256
    return result.manifest


def test_second_backup_stores_only_changed_pages_and_both_restore(
    kotomi_db: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    first = run_backup(settings(kotomi_db, store)).manifest
    assert first.format == 2 and first.paged and first.paged["base"] is None
    # Every page stored, identical ones (free pages) once.
    assert 0.9 * first.page_count < first.paged["new_pages"] <= first.page_count
    assert sum(i["pages"] for i in first.pack_files().values()) == first.paged["new_pages"]
    packs_before = pack_files(store)

    kotomi_requests(kotomi_db, 40)
    result = run_backup(settings(kotomi_db, store))
    second = result.manifest
    paged = second.paged or {}
    assert paged["base"] == first.backup_id
    assert 0 < paged["new_pages"] < 0.25 * second.page_count, paged
    assert paged["new_pages"] + paged["reused_pages"] == second.page_count
    # It wrote only its new packs: the first backup's packs are untouched and still named.
    assert packs_before <= pack_files(store)
    assert set(paged["new_packs"]) == pack_files(store) - packs_before
    new_bytes = sum((store / "kotomi" / "packs" / f).stat().st_size for f in paged["new_packs"])
    first_bytes = sum((store / "kotomi" / "packs" / f).stat().st_size for f in packs_before)
    assert new_bytes < first_bytes / 3
    assert result.outcomes[0].bytes < first_bytes / 3

    # The page map is compact: unchanged stretches are one run each, whatever their length.
    assert paged["runs"] <= 2 * paged["new_pages"] + len(second.pack_files()) + 8
    assert paged["runs"] < second.page_count / 3

    newest = restore_to(store, tmp_path / "r" / "new.db")
    assert newest.backup_id == second.backup_id
    older = restore_to(store, tmp_path / "r" / "old.db", which=first.backup_id)
    assert older.db_sha256 == first.db_sha256 != second.db_sha256
    # Point in time: the newest backup created before the second one is the first.
    moment = datetime.strptime(second.created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if first.created < moment:
        before = restore_to(store, tmp_path / "r" / "pit.db", before=moment)
        assert before.backup_id == first.backup_id


def test_unchanged_database_costs_almost_nothing(kotomi_db: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert run_backup(settings(kotomi_db, store)).snapshot.method == "copy"
    # The first read in place differs from the copy in page 1 only (a copy's header fields).
    second = run_backup(settings(kotomi_db, store))
    assert second.snapshot.method == "live read"
    assert (second.manifest.paged or {})["new_pages"] <= 1
    again = run_backup(settings(kotomi_db, store))
    paged = again.manifest.paged or {}
    assert again.snapshot.method == "live read"
    assert paged["new_packs"] == [] and paged["new_pages"] == 0
    assert again.outcomes[0].bytes < 4096  # a page map and a manifest


def test_full_backups_keep_format_1_without_a_paged_section(
    kotomi_db: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    manifest = run_backup(BackupSettings.from_env(db_path=kotomi_db, urls=(str(store),))).manifest
    data = json.loads((store / manifest.archive.key).parent.joinpath("manifest.json").read_text())
    assert data["format"] == 1 and "paged" not in data


def test_encrypted_packs_are_standard_age_and_zstd(
    kotomi_db: Path, tmp_path: Path, age_key: AgeKey
) -> None:
    store = tmp_path / "store"
    conf = settings(kotomi_db, store, age_recipients=age_key.recipient)
    manifest = run_backup(conf).manifest
    assert manifest.archive.encryption == "age"
    packs = sorted(pack_files(store))
    assert packs and all(p.endswith(".pack.age") for p in packs)
    # By hand, without this tool: the first pack holds the database's first pages, in order.
    age = subprocess.run(
        ["age", "-d", "-i", str(age_key.identity_file), str(store / "kotomi" / "packs" / packs[0])],
        capture_output=True,
        check=True,
    )
    raw = subprocess.run(["zstd", "-dc"], input=age.stdout, capture_output=True, check=True).stdout
    assert len(raw) % manifest.page_size == 0
    target = tmp_path / "restored.db"
    with pytest.raises(ConfigError, match="KOTOMI_BACKUP_AGE_IDENTITY"):
        restore_database([LocalStore(store)], "kotomi", target)
    assert not target.exists()
    from kotomi_backup_dagster.engine.archive import load_identities

    restore_to(store, target, identities=load_identities(age_key.identity_file))
    size = manifest.page_size
    restored = target.read_bytes()
    on_disk = {restored[i : i + size] for i in range(0, len(restored), size)}
    in_pack = [raw[i : i + size] for i in range(0, len(raw), size)]
    assert all(page in on_disk for page in in_pack)


def test_a_base_with_other_keys_or_a_lost_cache_is_not_reused(
    kotomi_db: Path, tmp_path: Path, age_key: AgeKey
) -> None:
    store = tmp_path / "store"
    plain = run_backup(settings(kotomi_db, store)).manifest
    encrypted = run_backup(settings(kotomi_db, store, age_recipients=age_key.recipient)).manifest
    # Plaintext pages must not end up inside an encrypted backup.
    assert (encrypted.paged or {})["base"] is None
    assert all(f.endswith(".age") for f in encrypted.pack_files())
    conf = settings(kotomi_db, store, age_recipients=age_key.recipient)
    shutil.rmtree(conf.page_hash_cache)
    again = run_backup(conf).manifest
    assert (again.paged or {})["base"] is None
    assert (again.paged or {})["new_pages"] > 0.9 * again.page_count
    assert plain.db_sha256 == again.db_sha256


def test_a_destination_that_lost_its_newest_backup_gets_a_copy_again(
    kotomi_db: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    conf = settings(kotomi_db, store)
    first = run_backup(conf).manifest
    kotomi_requests(kotomi_db, 10, seed=3)
    second = run_backup(conf)
    assert second.snapshot.method == "live read"
    shutil.rmtree(store / "kotomi" / second.manifest.backup_id)  # deleted by hand

    # The CLI asks the destination first: a copy at once, built on what it still has.
    kotomi_requests(kotomi_db, 10, seed=4)
    third = run_backup(conf)
    assert third.snapshot.method == "copy"
    assert (third.manifest.paged or {})["base"] == first.backup_id

    # Dagster's stages do not contact the stores before the upload: that upload fails with
    # one line, nothing is listed, and the next backup copies again.
    kotomi_requests(kotomi_db, 10, seed=5)
    staged, snap = stage_snapshot(conf)
    assert snap.method == "live read"
    assert stage_verify(staged, conf).ok
    stage_archive(staged, conf)
    shutil.rmtree(store / "kotomi" / third.manifest.backup_id)
    [outcome] = stage_upload(staged, [LocalStore(store)], settings=conf)
    assert not outcome.ok and "none of the backups this one was staged against" in str(
        outcome.error
    )
    assert "\n" not in str(outcome.error)
    listed = [n for n in LocalStore(store).list_children("kotomi") if n[0].isdigit()]
    assert listed == [first.backup_id]
    fourth = run_backup(conf)
    assert fourth.snapshot.method == "copy"
    assert (fourth.manifest.paged or {})["base"] == first.backup_id
    fifth = run_backup(conf)
    assert fifth.snapshot.method == "live read"
    assert (fifth.manifest.paged or {})["base"] == fourth.manifest.backup_id
    for manifest in (first, fourth.manifest, fifth.manifest):
        restore_to(store, tmp_path / "r" / f"{manifest.backup_id}.db", which=manifest.backup_id)


KOTOMI_WRITER = """\
import random, sys
from pathlib import Path
from kotomi_backup_dagster.demo import KotomiWriter, connect_like_kotomi
writer = KotomiWriter(connect_like_kotomi(Path(sys.argv[1])), random.Random(11))
while True:
    writer.request()
"""


def test_backups_read_in_place_while_kotomi_writes_restore_whole(
    kotomi_db: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    conf = settings(kotomi_db, store)
    run_backup(conf)  # the base: a copy
    writer = subprocess.Popen([sys.executable, "-c", KOTOMI_WRITER, str(kotomi_db)])
    made = []

    def comments_now() -> int:
        conn = sqlite3.connect(f"file:{kotomi_db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM comments").fetchone()[0])
        finally:
            conn.close()

    try:
        for _ in range(4):
            seen = comments_now()
            deadline = time.monotonic() + 20
            while comments_now() == seen and time.monotonic() < deadline:  # it is writing
                time.sleep(0.02)
            result = run_backup(conf)
            assert result.snapshot.method == "live read"
            made.append(result.manifest)
        assert writer.poll() is None, "the Kotomi writer failed while backups read in place"
    finally:
        writer.kill()
        writer.wait()
    comments = []
    for manifest in made:
        target = tmp_path / "r" / f"{manifest.backup_id}.db"
        restore_to(store, target, which=manifest.backup_id)  # checks the sha256
        conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            comments.append(conn.execute("SELECT count(*) FROM comments").fetchone()[0])
        finally:
            conn.close()
    # Each backup is a moment of a database that only grows (or stays while reactions toggle).
    assert comments == sorted(comments) and comments[-1] > comments[0], comments


def test_a_destination_that_lags_behind_still_builds_on_its_own_newest(
    kotomi_db: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    conf = BackupSettings.from_env(
        db_path=kotomi_db, urls=(str(first), str(second)), backup_format="paged"
    )
    base = run_backup(conf).manifest
    packs = second / "kotomi" / "packs"
    packs.rename(tmp_path / "packs-aside")
    packs.write_text("a file where the packs folder should be")  # the second store breaks
    for seed in range(5, 9):  # more backups than the page-hash cache keeps by count
        kotomi_requests(kotomi_db, 10, seed=seed)
        with pytest.raises(BackupError, match=r"upload of kotomi to file://.*/two failed"):
            run_backup(conf)
    packs.unlink()
    (tmp_path / "packs-aside").rename(packs)
    kotomi_requests(kotomi_db, 10, seed=9)
    result = run_backup(conf)
    assert result.snapshot.method == "live read"
    on_second = next(o.manifest for o in result.outcomes if o.url.endswith("/two"))
    assert on_second is not None and (on_second.paged or {})["base"] == base.backup_id
    assert (on_second.paged or {})["new_pages"] < 0.5 * on_second.page_count
    restore_to(second, tmp_path / "r" / "two.db")


def test_tampered_pack_or_page_map_restores_nothing(kotomi_db: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    manifest = run_backup(settings(kotomi_db, store)).manifest
    target = tmp_path / "live.db"
    # The live database's first pages: a restore replaces nothing that is not a database.
    current = kotomi_db.read_bytes()[: 64 * 1024]
    target.write_bytes(current)
    [pack] = pack_files(store)
    path = store / "kotomi" / "packs" / pack
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=f"pack {pack}"):
        restore_database([LocalStore(store)], "kotomi", target, force=True)
    assert target.read_bytes() == current
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".live")] == []

    path.unlink()
    with pytest.raises(BackupError, match="missing"):
        restore_database([LocalStore(store)], "kotomi", target, force=True)

    page_map = store / manifest.archive.key
    page_map.write_bytes(page_map.read_bytes()[:-3])
    with pytest.raises(BackupError, match="page map"):
        restore_database([LocalStore(store)], "kotomi", target, force=True)
    assert target.read_bytes() == current


def blob_db(path: Path, rows: int = 600) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
    rng = random.Random(3)
    conn.executemany(
        "INSERT INTO blobs (id, body) VALUES (?, ?)",
        [(i, rng.randbytes(1500)) for i in range(rows)],
    )
    conn.commit()
    conn.close()


def rewrite_rows(path: Path, share: float, seed: int) -> None:
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    (rows,) = conn.execute("SELECT count(*) FROM blobs").fetchone()
    for i in rng.sample(range(rows), int(rows * share)):
        conn.execute("UPDATE blobs SET body = ? WHERE id = ?", (rng.randbytes(1500), i))
    conn.commit()
    conn.close()


def test_prune_removes_unneeded_packs_and_repacks_mostly_dead_ones(tmp_path: Path) -> None:
    db, store = tmp_path / "blobs.db", tmp_path / "store"
    blob_db(db)
    conf = settings(db, store, profile="generic")
    first = run_backup(conf).manifest
    rewrite_rows(db, 0.8, seed=1)
    second = run_backup(conf).manifest
    assert (second.paged or {})["base"] == first.backup_id
    old_packs = set(first.pack_files())
    assert old_packs & set(second.pack_files()), "the second backup reuses the first's pack"

    later = datetime.now(UTC) + timedelta(days=2)
    dry = prune_store(
        LocalStore(store), "kotomi", RetentionPolicy(keep_last=1), now=later, dry_run=True
    )
    assert dry.removed == [first.backup_id] and pack_files(store) >= old_packs

    result = prune_store(LocalStore(store), "kotomi", RetentionPolicy(keep_last=1), now=later)
    assert result.removed == [first.backup_id]
    assert result.packs.repacked and set(result.packs.repacked) <= old_packs
    assert result.packs.rewritten_backups == [second.backup_id]
    [kept] = [m for m in _listed(store)]
    assert kept.backup_id == second.backup_id and (kept.paged or {}).get("repacked_at")
    # Exactly the packs the kept backup names remain; the mostly-dead one is gone.
    assert pack_files(store) == set(kept.pack_files())
    assert not (old_packs & pack_files(store))
    assert result.bytes_freed > 0
    restore_to(store, tmp_path / "r.db", profile="generic")
    # The old page map was replaced by the new one, not left beside it.
    maps = sorted(p.name for p in (store / "kotomi" / second.backup_id).glob("*.zst"))
    assert maps == [Path(kept.archive.key).name]


def test_young_unnamed_packs_are_kept_and_encrypted_repack_needs_the_key(
    tmp_path: Path, age_key: AgeKey
) -> None:
    db, store = tmp_path / "blobs.db", tmp_path / "store"
    blob_db(db)
    conf = settings(db, store, profile="generic", age_recipients=age_key.recipient)
    first = run_backup(conf).manifest
    rewrite_rows(db, 0.8, seed=2)
    run_backup(conf)
    policy = RetentionPolicy(keep_last=1)
    soon = prune_store(LocalStore(store), "kotomi", policy)
    # Removed from the catalog, but a pack younger than a day may belong to an upload in flight.
    assert soon.removed == [first.backup_id]
    later = datetime.now(UTC) + timedelta(days=2)
    blind = prune_store(LocalStore(store), "kotomi", policy, now=later)
    assert not blind.packs.repacked
    assert any("KOTOMI_BACKUP_AGE_IDENTITY" in n for n in blind.packs.notes)
    from kotomi_backup_dagster.engine.archive import load_identities

    keys = load_identities(age_key.identity_file)
    done = prune_store(
        LocalStore(store),
        "kotomi",
        policy,
        now=later,
        identities=keys,
        recipients_text=age_key.recipient,
    )
    assert done.packs.repacked and all(f.endswith(".pack.age") for f in done.packs.written)
    restore_to(store, tmp_path / "r.db", profile="generic", identities=keys)


def _listed(store: Path) -> list[Manifest]:
    from kotomi_backup_dagster.engine.layout import list_backups

    listing = list_backups(LocalStore(store), "kotomi")
    assert not listing.unreadable
    return listing.backups


@pytest.mark.parametrize("seed", range(5))
def test_page_map_roundtrip_is_exact(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randrange(1, 3000)
    packs = [f"20261127T000000Z-00000{i}-0.pack" for i in range(4)]
    pack_of, entry_of = array("I"), array("I")
    page = 0
    while page < count:  # runs of consecutive entries, as real backups make them
        length = min(count - page, rng.randrange(1, 200))
        pack, start = rng.randrange(len(packs)), rng.randrange(5000)
        pack_of.extend([pack] * length)
        entry_of.extend(range(start, start + length))
        page += length
    built = build_page_map(4096, packs, pack_of, entry_of)
    decoded = PageMap.decode(built.encode(), where="test")
    got_pack, got_entry = decoded.locations()
    assert [decoded.packs[p] for p in got_pack] == [packs[p] for p in pack_of]
    assert list(got_entry) == list(entry_of)
    assert decoded.run_count <= count


def test_page_map_that_skips_a_page_is_refused() -> None:
    good = build_page_map(4096, ["a.pack"], array("I", [0, 0]), array("I", [0, 1]))
    bad = PageMap(4096, 3, good.packs, good.runs)
    with pytest.raises(BackupError, match="covers 2 pages"):
        PageMap.decode(bad.encode(), where="test")


def test_cli_backup_format_flag_and_env(kotomi_db: Path, tmp_path: Path) -> None:
    args = ("backup", "--db", str(kotomi_db), "--to", str(tmp_path / "s"))
    bad = run_cli(*args, env={"KOTOMI_BACKUP_FORMAT": "pagd"})
    assert bad.returncode == 2 and "use full or paged" in one_line_error(bad)
    ok = run_cli(*args, "--json", env={"KOTOMI_BACKUP_FORMAT": "paged"})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["manifest"]["format"] == 2


def test_drills_and_verify_work_on_paged_backups(kotomi_db: Path, tmp_path: Path) -> None:
    from kotomi_backup_dagster.engine.drill import drill_store
    from kotomi_backup_dagster.engine.layout import latest_drill
    from kotomi_backup_dagster.engine.verify_path import verify_path

    store = tmp_path / "store"
    first = run_backup(settings(kotomi_db, store)).manifest
    kotomi_requests(kotomi_db, 20)
    run_backup(settings(kotomi_db, store))
    drilled = drill_store(LocalStore(store), "kotomi", "all")
    assert len(drilled) == 2 and all(record.ok for _, record in drilled)
    assert all(record.checks["kotomi_queries"] is True for _, record in drilled)
    assert (record := latest_drill(LocalStore(store), "kotomi", first.backup_id)) and record.ok
    checked = verify_path(store / "kotomi" / first.backup_id)
    assert not checked.problems and checked.report and checked.report.ok
    # A flipped byte in a pack shared by both backups fails both drills.
    [pack] = [p for p in pack_files(store) if p in first.pack_files()]
    path = store / "kotomi" / "packs" / pack
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x10
    path.write_bytes(bytes(data))
    failed = drill_store(LocalStore(store), "kotomi", "all")
    assert [record.ok for _, record in failed] == [False, False]
    assert all(pack in " ".join(record.problems) for _, record in failed)


@pytest.mark.parametrize("seed", range(6))
def test_splicing_changes_into_a_base_equals_building_from_every_page(seed: int) -> None:
    from kotomi_backup_dagster.engine.paged.pagemap import splice_page_map

    rng = random.Random(seed)
    base_count = rng.randrange(1, 2000)
    packs = ["a.pack", "b.pack", "c.pack"]
    pack_of = array("I", [rng.randrange(2) for _ in range(base_count)])
    entry_of = array("I", range(base_count))
    base = build_page_map(4096, packs[:2], pack_of, entry_of)
    base = PageMap(4096, base_count, packs[:2], base.runs)  # keep both packs named
    count = max(1, base_count + rng.randrange(-50, 50))
    pages = sorted(
        set(rng.sample(range(count), rng.randrange(0, count // 3 + 1)))
        | set(range(base_count, count))
    )
    changed = [(page, 2, n) for n, page in enumerate(pages)]
    flat = array("I", [v for triple in changed for v in triple])
    spliced = splice_page_map(base, 4096, count, list(packs), flat)
    want_pack = array("I", [0]) * count
    want_entry = array("I", [0]) * count
    base_pack, base_entry = base.locations()
    for page in range(min(count, base_count)):
        want_pack[page], want_entry[page] = base_pack[page], base_entry[page]
    for page, pack, entry in changed:
        want_pack[page], want_entry[page] = pack, entry
    expected = build_page_map(4096, list(packs), want_pack, want_entry)
    assert spliced.packs == expected.packs
    assert list(spliced.runs) == list(expected.runs)


def test_backup_ids_made_within_one_second_sort_by_time() -> None:
    from kotomi_backup_dagster.engine.manifest import is_backup_id, new_backup_id

    moment = datetime(2026, 11, 27, 2, 0, 0, tzinfo=UTC)
    ids = [new_backup_id(moment + timedelta(microseconds=m)) for m in (0, 1, 17, 999_999)]
    assert ids == sorted(ids) and all(is_backup_id(i) for i in ids)
    assert len({new_backup_id(moment) for _ in range(64)}) > 1  # same instant, still differ


def test_a_torn_staging_file_fails_the_upload_with_one_line(
    kotomi_db: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    conf = settings(kotomi_db, store)
    run_backup(conf)
    kotomi_requests(kotomi_db, 10, seed=6)
    staged, snap = stage_snapshot(conf)
    assert snap.method == "live read"
    stage_archive(staged, conf)
    info = staged.workdir / "pages.json"
    info.write_bytes(info.read_bytes()[:20])  # what a power cut can leave of an unsynced file
    with pytest.raises(BackupError, match=r"staged pages\.json is damaged") as caught:
        stage_upload(staged, [LocalStore(store)], settings=conf)
    assert "\n" not in str(caught.value)
    assert len([n for n in LocalStore(store).list_children("kotomi") if n[0].isdigit()]) == 1
