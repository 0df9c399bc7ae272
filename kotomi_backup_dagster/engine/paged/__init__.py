"""The paged backup format: only the pages a destination does not have yet are stored.

livepages.py  the pages of a live WAL database, read in place under one read transaction
liveread.py   snapshot, check and hashes of a backup in one pass over them (no copy)
delta.py      where the upload reads staged pages: a snapshot file, or the changed pages only
hashes.py     page hashes of a snapshot, and the local cache of recent ones
packs.py      pack files (pages compressed together, age-wrapped when encrypted)
pagemap.py    a backup's page map: where each page lives, as runs
publish.py    one backup to one destination: new packs, page map, manifest last
rebuild.py    the exact database file back from a page map and its packs
packgc.py     pruning: remove packs no kept backup needs, repack mostly-dead ones
"""

from .hashes import HashCache, PageHashes, hash_pages
from .publish import publish_paged, recipients_fingerprint
from .rebuild import rebuild_database

__all__ = [
    "HashCache",
    "PageHashes",
    "hash_pages",
    "publish_paged",
    "rebuild_database",
    "recipients_fingerprint",
]
