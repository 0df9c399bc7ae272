"""Prune and list do not trust a manifest alone: a backup whose objects are deleted or
changed on the store (by hand, a lifecycle rule) fills no retention slot, is kept for
inspection, and is marked; the check costs a request per backup and one listing of the
packs, never one request per pack."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kotomi_backup_dagster.engine.layout import list_backups
from kotomi_backup_dagster.engine.manifest import Manifest
from kotomi_backup_dagster.engine.objects import damaged_backups
from kotomi_backup_dagster.engine.paged.packs import pack_key
from kotomi_backup_dagster.engine.prune import plan_store, prune_store
from kotomi_backup_dagster.engine.retention import RetentionPolicy
from kotomi_backup_dagster.engine.stores import open_store
from kotomi_backup_dagster.engine.stores.base import LIST_FROM
from tests.conftest import gcs_client, kotomi_requests, run_cli, s3_client
from tests.engine.stores.conftest import Backend, backups_at
from tests.engine.stores.test_paged_stores import backup as paged_backup
from tests.engine.stores.test_paged_stores import listed_prefixes, paged, written
from tests.servers import FaultProxy

NOW = datetime.now(UTC).replace(microsecond=0)


def same_day(db: Path, url: str, tmp_path: Path, count: int) -> list[Manifest]:
    """`count` backups a minute apart on one UTC day, ending at most now, newest first (an
    hour apart, they spanned two days when run just after midnight: a wrong daily plan)."""
    end = NOW
    if (end - timedelta(minutes=count)).date() != end.date():
        end = end.replace(hour=0, minute=0, second=0) - timedelta(seconds=1)
    return backups_at(db, url, tmp_path, [end - timedelta(minutes=n) for n in range(count)])


def one_daily(url: str) -> dict[str, str]:
    """The CLI's environment: this destination, one daily backup kept, nothing else."""
    env = {"KOTOMI_BACKUP_URL": url, "KOTOMI_BACKUP_KEEP_DAILY": "1"}
    env.update({f"KOTOMI_BACKUP_KEEP_{k}": "0" for k in ("WEEKLY", "MONTHLY", "YEARLY")})
    return env


def test_a_backup_whose_archive_was_deleted_fills_no_slot_and_list_marks_it(
    kotomi_db: Path, backend: Backend, tmp_path: Path
) -> None:
    destination = backend.url("prod")
    newest, second, third, fourth = same_day(kotomi_db, destination, tmp_path, 4)
    open_store(destination).delete(newest.archive.key)  # the manifest stays

    listed = run_cli("list", "--json", env=one_daily(destination))
    assert listed.returncode == 0, listed.stderr
    [dest] = json.loads(listed.stdout)["destinations"]
    rows = {b["backup_id"]: b for b in dest["backups"]}
    assert rows[newest.backup_id]["damaged"] == "objects missing: kotomi.db.zst"
    assert rows[newest.backup_id]["tiers"] == [
        "newest",
        "objects missing: kotomi.db.zst: kept for inspection",
    ]
    assert [rows[m.backup_id]["damaged"] for m in (second, third, fourth)] == [None] * 3
    assert rows[second.backup_id]["tiers"] == [f"daily {second.created:%Y-%m-%d}"]
    assert rows[newest.backup_id]["archive"] == json.loads(newest.to_json())["archive"]

    human = run_cli("list", env=one_daily(destination))
    assert human.returncode == 0, human.stderr
    assert f"DAMAGED {newest.backup_id}: objects missing: kotomi.db.zst" in human.stdout

    dry = run_cli("prune", "--dry-run", "--json", env=one_daily(destination))
    assert dry.returncode == 0, dry.stderr
    [plan] = json.loads(dry.stdout)["destinations"]
    kept = {b["backup_id"] for b in plan["backups"] if b["keep"]}
    # Before: the newest kept as newest and daily, the three intact ones removed.
    assert kept == {newest.backup_id, second.backup_id}
    assert sorted(plan["removed"]) == sorted([third.backup_id, fourth.backup_id])

    pruned = run_cli("prune", env=one_daily(destination))
    assert pruned.returncode == 0, pruned.stderr
    left = {m.backup_id for m in list_backups(open_store(destination), "kotomi").backups}
    assert left == {newest.backup_id, second.backup_id}


def overwrite(url: str, key: str, data: bytes) -> None:
    """Replace an object behind the tool's back, with the provider's own client."""
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    full = f"{prefix}/{key}"
    if scheme == "s3":
        # With a SHA-256, as `aws s3 cp --checksum-algorithm SHA256` writes it: an object
        # stored without one is checked by its size only.
        s3_client(os.environ["AWS_ENDPOINT_URL"]).put_object(
            Bucket=bucket, Key=full, Body=data, ChecksumAlgorithm="SHA256"
        )
    else:
        gcs_client().bucket(bucket).blob(full).upload_from_string(data)


def test_a_changed_archive_is_caught_by_size_and_on_s3_by_its_sha256(
    kotomi_db: Path, remote: tuple[str, FaultProxy], tmp_path: Path
) -> None:
    url, proxy = remote
    newest, second, third = same_day(kotomi_db, url, tmp_path, 3)
    store = open_store(url)
    overwrite(url, newest.archive.key, b"\0" * newest.archive.size)  # same size, other bytes
    overwrite(url, second.archive.key, b"short")

    proxy.clear()
    damaged = damaged_backups(store, [newest, second, third])
    heads = [r for r in proxy.requests() if "kotomi.db.zst" in r.path]
    assert len(proxy.requests()) == len(heads) == 3, "one request per backup, nothing else"
    assert damaged[second.backup_id] == (
        f"objects changed: kotomi.db.zst holds 5 bytes, the manifest says {second.archive.size}"
    )
    if url.startswith("s3"):  # S3 returns the SHA-256 of an object stored in one request
        assert damaged[newest.backup_id] == (
            "objects changed: kotomi.db.zst has another sha256 than the manifest's"
        )
    else:  # GCS keeps no SHA-256: same size passes this check (drills read the bytes)
        assert newest.backup_id not in damaged
    assert third.backup_id not in damaged

    plan, _ = plan_store(store, "kotomi", RetentionPolicy(keep_last=1))
    decisions = {p.manifest.backup_id: p for p in plan}
    intact = third if url.startswith("s3") else newest
    assert decisions[intact.backup_id].reasons[-1] == "last", "an intact backup takes the slot"
    assert decisions[second.backup_id].keep and decisions[second.backup_id].problem


def test_a_deleted_pack_damages_each_paged_backup_that_names_it_checked_by_one_listing(
    kotomi_db: Path, remote: tuple[str, FaultProxy]
) -> None:
    url, proxy = remote
    config = paged(kotomi_db, url)
    made = []
    for hour in range(LIST_FROM):
        kotomi_requests(kotomi_db, 30, seed=hour)
        _, [outcome] = paged_backup(config, [open_store(url)], hour)
        made.append(written(outcome))
    store = open_store(url)
    packs = sorted({f for m in made for f in m.pack_files()})
    assert len(packs) >= LIST_FROM
    last_new = (made[-1].paged or {})["new_packs"][0]
    first_new = (made[0].paged or {})["new_packs"][0]
    store.delete(pack_key("kotomi", last_new))

    listing = list_backups(store, "kotomi")
    proxy.clear()
    damaged = damaged_backups(store, listing.backups)
    seen = proxy.requests()
    assert not [r for r in seen if ".pack" in r.path], "a request per pack"
    assert listed_prefixes(seen) == ["offsite/kotomi/packs/"]
    assert len(seen) == len(made) + 1  # each page map, and the packs listed once
    assert damaged == {made[-1].backup_id: f"objects missing: packs/{last_new}"}

    store.delete(pack_key("kotomi", first_new))  # every backup builds on the first one's
    damaged = damaged_backups(store, list_backups(store, "kotomi").backups)
    assert set(damaged) == {m.backup_id for m in made}
    newest_problem = damaged[made[-1].backup_id]
    assert newest_problem.startswith("objects missing: packs/")
    assert f"packs/{first_new}" in newest_problem and f"packs/{last_new}" in newest_problem

    result = prune_store(store, "kotomi", RetentionPolicy(keep_last=1), dry_run=True)
    assert result.removed == [], "nothing intact is left to keep in their place"
    assert set(result.damaged) == {m.backup_id for m in made}
