"""Are a backup's objects still on the store, as its manifest describes them?

A manifest says a backup exists; it does not prove that the archive (or the page map and
every pack a paged backup names) is still there. Someone may have deleted or overwritten
an object by hand, or a lifecycle rule may have. Prune and list ask the store before they
trust a manifest: every object must be there with the size the manifest records, and with
its sha256 where the store gives one without reading the object (S3, for an object stored
in one request). A backup that fails fills no retention slot (it is kept for inspection)
and raises a health alert.

Cost: one request per backup (its archive or page map), plus one listing of the packs
folder for all paged backups together, never one request per pack.
"""

from __future__ import annotations

from collections.abc import Sequence

from .manifest import Manifest
from .paged.packs import pack_key
from .stores import BackupStore

SHOWN = 3  # objects named in a reason; the rest are counted


def expected_objects(manifest: Manifest) -> dict[str, tuple[int, str]]:
    """The objects a backup needs: {key: (size, sha256)}."""
    needed = {manifest.archive.key: (manifest.archive.size, manifest.archive.sha256)}
    for pack, info in manifest.pack_files().items():
        needed[pack_key(manifest.name, pack)] = (int(info["size"]), str(info.get("sha256", "")))
    return needed


def damaged_backups(store: BackupStore, manifests: Sequence[Manifest]) -> dict[str, str]:
    """{backup_id: why} for every backup whose objects are missing or differ from its
    manifest; the others are left out. Store errors are raised (nothing is decided)."""
    needed = {key: want for m in manifests for key, want in expected_objects(m).items()}
    if not needed:
        return {}
    stored = store.stat_objects(sorted(needed))
    damaged: dict[str, str] = {}
    for manifest in manifests:
        missing: list[str] = []
        changed: list[str] = []
        for key, (size, sha256) in expected_objects(manifest).items():
            found = stored.get(key)
            label = short_key(manifest, key)
            if found is None:
                missing.append(label)
            elif found.size != size:
                changed.append(f"{label} holds {found.size} bytes, the manifest says {size}")
            elif found.sha256 and sha256 and found.sha256 != sha256:
                changed.append(f"{label} has another sha256 than the manifest's")
        reasons = []
        if missing:
            reasons.append(f"objects missing: {some(missing)}")
        if changed:
            reasons.append(f"objects changed: {some(changed)}")
        if reasons:
            damaged[manifest.backup_id] = "; ".join(reasons)
    return damaged


def short_key(manifest: Manifest, key: str) -> str:
    """A key as short as it stays clear: within the backup's folder, or `packs/<file>`."""
    return key.removeprefix(f"{manifest.name}/{manifest.backup_id}/").removeprefix(
        f"{manifest.name}/"
    )


def some(items: list[str]) -> str:
    """The first few items, the rest counted."""
    shown = ", ".join(items[:SHOWN])
    more = len(items) - SHOWN
    return f"{shown} and {more} more" if more > 0 else shown
