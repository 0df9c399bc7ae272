"""Paged backups on S3 and GCS: only the pages a destination lacks go up, in a few requests;
each destination keeps its own page maps; a cut upload lands on a re-run; pruning removes the
packs no kept backup names.

Backups here run through the stages, as Dagster runs them, each dated an hour after the one
before: backup ids order by time only to the second, and a paged backup builds on the newest
older backup id, so two backups taken within one second might not see each other.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from kotomi_backup_dagster.demo import generate_demo_database
from kotomi_backup_dagster.engine.backup import (
    StagedBackup,
    UploadOutcome,
    stage_archive,
    stage_snapshot,
    stage_upload,
    stage_verify,
)
from kotomi_backup_dagster.engine.layout import REVISIONS, list_backups, manifest_key
from kotomi_backup_dagster.engine.manifest import PAGED_FORMAT, Manifest
from kotomi_backup_dagster.engine.paged import HashCache
from kotomi_backup_dagster.engine.prune import prune_store
from kotomi_backup_dagster.engine.restore import check_restored, choose_backup, fetch_backup
from kotomi_backup_dagster.engine.retention import RetentionPolicy
from kotomi_backup_dagster.engine.settings import BackupSettings
from kotomi_backup_dagster.engine.stores import BackupStore, open_store
from tests.conftest import AWS_SECRET, kotomi_requests, s3_client
from tests.engine.stores.conftest import is_upload, settings
from tests.servers import Endpoint, FaultProxy, Request, Rule

NAME = "kotomi"
PACKS = f"{NAME}/packs"
# The first backup of each test is dated here, the next ones an hour apart.
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=12)


@pytest.fixture(scope="module")
def larger_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 MB (about 3,900 pages of 4 KiB): large enough that a few hundred Kotomi requests
    touch a small share of the pages, as in production."""
    path = tmp_path_factory.mktemp("paged-demo") / "kotomi.db"
    generate_demo_database(path, size_bytes=16_000_000, seed=11)
    return path


@pytest.fixture
def larger_db(larger_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "larger" / "kotomi.db"
    path.parent.mkdir()
    shutil.copyfile(larger_template, path)
    return path


def paged(db: Path, *urls: str) -> BackupSettings:
    config: BackupSettings = settings(db, *urls, backup_format="paged")
    return config


def backup(
    config: BackupSettings, stores: Sequence[BackupStore], hour: int
) -> tuple[StagedBackup, list[UploadOutcome]]:
    """One paged backup through the four stages, dated `hour` hours after START."""
    staged, _ = stage_snapshot(config, now=START + timedelta(hours=hour))
    assert stage_verify(staged, config).ok
    draft, _ = stage_archive(staged, config)
    assert draft.format == PAGED_FORMAT and draft.is_paged
    return staged, stage_upload(staged, stores, settings=config)


def written(outcome: UploadOutcome) -> Manifest:
    assert outcome.ok, outcome.error
    assert outcome.manifest is not None, "a paged upload reports the manifest it wrote"
    return outcome.manifest


def restored_sha256(store: BackupStore, manifest: Manifest, dest: Path) -> str:
    """Restore `manifest` as the catalog lists it on `store`; the file's sha256."""
    chosen = choose_backup([store], NAME, manifest.backup_id)
    assert chosen.manifest == manifest, "the catalog lists another manifest than was written"
    fetch_backup(chosen, dest)
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def new_packs(*manifests: Manifest) -> set[str]:
    return {f for m in manifests for f in (m.paged or {})["new_packs"]}


def named_packs(*manifests: Manifest) -> set[str]:
    return {f for m in manifests for f in m.pack_files()}


def listed_prefixes(requests: list[Request]) -> list[str]:
    """The prefix of every listing request (S3 ListObjectsV2, GCS objects.list)."""
    return [
        parse_qs(r.query)["prefix"][0]
        for r in requests
        if r.method == "GET" and "prefix" in parse_qs(r.query)
    ]


def test_an_incremental_paged_backup_stores_few_pages_in_few_requests(
    larger_db: Path, remote: tuple[str, FaultProxy], tmp_path: Path
) -> None:
    url, proxy = remote
    config = paged(larger_db, url)
    store = open_store(url)
    _, [first_outcome] = backup(config, [store], 0)
    first = written(first_outcome)
    assert first.format == PAGED_FORMAT
    assert first.paged is not None and first.paged["base"] is None
    assert first.paged["new_pages"] > 0.9 * first.page_count  # all of them, less duplicates

    made = [first]
    requests: list[int] = []
    for hour in (1, 2):
        kotomi_requests(larger_db, 200, seed=hour)
        proxy.clear()
        _, [outcome] = backup(config, [open_store(url)], hour)
        manifest = written(outcome)
        info = manifest.paged or {}
        assert info["base"] == made[-1].backup_id
        assert info["new_pages"] <= manifest.page_count // 5, info
        assert info["reused_pages"] == manifest.page_count - info["new_pages"]
        assert outcome.bytes <= first_outcome.bytes // 4, (outcome.bytes, first_outcome.bytes)
        assert len(info["new_packs"]) == 1

        seen = proxy.requests()
        # The catalog's "already there?" check, then what the upload reports: the base's
        # manifest, the revisions of manifests listed (a repack writes one), the base's page
        # map, the pack (S3: PUT + HEAD), the page map, the base's manifest again and the
        # packs listed, the manifest. None of it grows with the backups stored.
        expected = {"s3": 10, "gs": 9}[url.split(":")[0]]
        assert len(seen) == 1 + outcome.requests == expected, [(r.method, r.target) for r in seen]
        assert listed_prefixes(seen) == [
            f"offsite/{NAME}/{REVISIONS}/",
            f"offsite/{PACKS}/",
        ], "listed more than the revisions and the packs"
        requests.append(len(seen))
        made.append(manifest)
    assert requests[0] == requests[1], "the cost grew with the number of backups stored"

    assert set(store.list_children(PACKS)) == new_packs(*made)
    listing = list_backups(store, NAME)
    assert listing.backups == made[::-1]
    assert listing.incomplete == [] and listing.unreadable == []
    for manifest in made:
        dest = tmp_path / "restored" / f"{manifest.backup_id}.db"
        assert restored_sha256(store, manifest, dest) == manifest.db_sha256
    check_restored(tmp_path / "restored" / f"{made[-1].backup_id}.db", made[-1])


def test_each_destination_gets_its_own_page_maps_and_a_new_one_gets_every_page(
    kotomi_db: Path,
    s3_bucket: str,
    gs_bucket: str,
    aws_env: Endpoint,
    gcs_env: Endpoint,
    tmp_path: Path,
) -> None:
    urls = [str(tmp_path / "local"), f"s3://{s3_bucket}/prod", f"gs://{gs_bucket}/prod"]
    two = paged(kotomi_db, *urls[:2])
    staged, outcomes = backup(two, [open_store(u) for u in urls[:2]], 0)
    firsts = [written(o) for o in outcomes]
    assert [o.url for o in outcomes] == [f"file://{urls[0]}", urls[1]]
    assert not staged.workdir.exists(), "staging kept after every store has the backup"
    assert {m.backup_id for m in firsts} == {staged.backup_id}
    assert all((m.paged or {})["base"] is None for m in firsts)
    assert firsts[0].db_sha256 == firsts[1].db_sha256
    assert new_packs(firsts[0]).isdisjoint(new_packs(firsts[1])), "packs are per destination"

    kotomi_requests(kotomi_db, 60, seed=5)
    three = paged(kotomi_db, *urls)  # the GCS destination is added
    _, outcomes = backup(three, [open_store(u) for u in urls], 1)
    local, s3, gcs = (written(o) for o in outcomes)
    assert local.db_sha256 == s3.db_sha256 == gcs.db_sha256
    for old, new in ((firsts[0], local), (firsts[1], s3)):
        info = new.paged or {}
        assert info["base"] == old.backup_id
        assert info["new_pages"] < new.page_count // 2
        assert named_packs(new) == named_packs(old) | new_packs(new)
    gcs_info = gcs.paged or {}
    assert gcs_info["base"] is None, "a new destination cannot build on packs it does not have"
    assert named_packs(gcs) == new_packs(gcs), "every page in the new destination's own packs"
    assert gcs_info["new_pages"] > (local.paged or {})["new_pages"]
    assert new_packs(local).isdisjoint(new_packs(s3))

    expected = {urls[0]: [local, firsts[0]], urls[1]: [s3, firsts[1]], urls[2]: [gcs]}
    for n, (url, manifests) in enumerate(expected.items()):
        store = open_store(url)
        assert list_backups(store, NAME).backups == manifests
        assert set(store.list_children(PACKS)) == named_packs(*manifests)
        for manifest in manifests:
            dest = tmp_path / "restored" / f"{n}-{manifest.backup_id}.db"
            assert restored_sha256(store, manifest, dest) == manifest.db_sha256


def test_a_pack_upload_cut_for_good_fails_in_one_line_and_a_rerun_lands_it(
    kotomi_db: Path,
    remote: tuple[str, FaultProxy],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    url, proxy = remote
    monkeypatch.setenv("KOTOMI_BACKUP_RETRIES", "2")
    config = paged(kotomi_db, url)
    staged, _ = stage_snapshot(config, now=START)
    stage_verify(staged, config)
    draft, _ = stage_archive(staged, config)
    proxy.rules.append(Rule(is_upload, "drop"))  # the pack is the first object to go up

    [outcome] = stage_upload(staged, [open_store(url)], settings=config)
    assert not outcome.ok and outcome.manifest is None
    error = outcome.error or ""
    assert error and "\n" not in error, error
    assert url in error and f"{PACKS}/" in error and "after 3 attempts" in error, error
    assert AWS_SECRET not in error
    uploads = [r for r in proxy.requests() if is_upload(r)]
    assert len(uploads) == 3, "anything but the one pack was sent"
    if url.startswith("s3"):  # GCS names the object in the upload's body
        assert all(f"/offsite/{PACKS}/" in r.path for r in uploads)
    store = open_store(url)
    listing = list_backups(store, NAME)
    assert listing.backups == [] and listing.incomplete == [] and listing.unreadable == []
    assert store.list_children(PACKS) == []
    assert staged.snapshot_path.exists(), "the staged snapshot is gone: no re-run possible"
    assert not any((staged.workdir / "packs").glob("*.pack*")), "staged packs left behind"
    assert HashCache(config.page_hash_cache).newest() == [], "a failed upload became a base"

    proxy.clear()  # the network is back: Dagster re-executes the upload stage alone
    [again] = stage_upload(staged, [open_store(url)], settings=config)
    landed = written(again)
    assert not again.already_there
    assert landed.backup_id == draft.backup_id and landed.db_sha256 == draft.db_sha256
    assert (landed.paged or {})["base"] is None
    assert list_backups(store, NAME).backups == [landed]
    assert set(store.list_children(PACKS)) == named_packs(landed)
    assert not staged.workdir.exists()
    dest = tmp_path / "restored.db"
    assert restored_sha256(store, landed, dest) == draft.db_sha256
    check_restored(dest, landed)


def bucket_keys(bucket: str, endpoint_url: str, prefix: str) -> set[str]:
    pages = s3_client(endpoint_url).get_paginator("list_objects_v2")
    found: set[str] = set()
    for page in pages.paginate(Bucket=bucket, Prefix=prefix):
        found.update(str(o["Key"]) for o in page.get("Contents", []))
    return found


def test_pruning_a_paged_series_removes_unnamed_packs_and_kept_backups_restore(
    kotomi_db: Path, s3_bucket: str, aws_env: Endpoint, tmp_path: Path
) -> None:
    url = f"s3://{s3_bucket}/prod"
    config = paged(kotomi_db, url)
    store = open_store(url)
    made: list[Manifest] = []
    # A quiet hour, then two busy ones: most pages of the second backup's pack are rewritten
    # later, so once the two oldest backups go, that pack is mostly dead and is repacked.
    for hour, load in enumerate((0, 5, 400, 400)):
        kotomi_requests(kotomi_db, load, seed=10 + hour)
        _, [outcome] = backup(config, [store], hour)
        made.append(written(outcome))
    before = set(store.list_children(PACKS))
    assert before == new_packs(*made)

    two_days_on = datetime.now(UTC) + timedelta(days=2)  # every pack is past its grace period
    result = prune_store(store, NAME, RetentionPolicy(keep_last=2), now=two_days_on)
    assert sorted(result.removed) == sorted(m.backup_id for m in made[:2])
    kept = list_backups(store, NAME).backups
    assert [m.backup_id for m in kept] == [m.backup_id for m in made[:1:-1]]
    assert [m.db_sha256 for m in kept] == [m.db_sha256 for m in made[:1:-1]]

    after = set(store.list_children(PACKS))
    assert after == named_packs(*kept), "a pack no kept backup names is still there"
    assert result.packs.removed, "nothing was pruned from the packs"
    assert set(result.packs.removed) == (before | set(result.packs.written)) - after
    assert set(result.packs.repacked) <= set(result.packs.removed)
    assert set(result.packs.rewritten_backups) <= {m.backup_id for m in kept}
    assert result.packs.kept_young == [] and result.packs.notes == []
    # Nothing else is left: each kept backup's manifest (and the revision a repack wrote)
    # and current page map, and packs.
    expected = {f"prod/{PACKS}/{p}" for p in after}
    revised = list_backups(store, NAME).revised
    assert set(revised) == set(result.packs.rewritten_backups)
    for manifest in kept:
        expected |= {
            f"prod/{manifest.archive.key}",
            f"prod/{manifest_key(NAME, manifest.backup_id)}",
        }
        if manifest.backup_id in revised:
            expected.add(f"prod/{revised[manifest.backup_id]}")
    assert bucket_keys(s3_bucket, aws_env.url, "prod/") == expected

    for manifest in kept:
        dest = tmp_path / "restored" / f"{manifest.backup_id}.db"
        assert restored_sha256(store, manifest, dest) == manifest.db_sha256

    # The next backup still builds on the newest kept one, repacked or not.
    kotomi_requests(kotomi_db, 40, seed=99)
    _, [outcome] = backup(config, [store], 4)
    latest = written(outcome)
    assert (latest.paged or {})["base"] == made[-1].backup_id
    dest = tmp_path / "restored" / "latest.db"
    assert restored_sha256(store, latest, dest) == latest.db_sha256
