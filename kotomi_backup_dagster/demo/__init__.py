"""Kotomi-shaped data for the demo, the tests and the benchmarks: never used by a backup.

- :mod:`.schema`: Kotomi's DDL, migration and pragmas; ``connect_like_kotomi``.
- :mod:`.words`: the vocabulary rows are made of (text, people, sites, reactions).
- :mod:`.values`: UUIDv4 keys and Kotomi's two timestamp forms.
- :mod:`.rows`: the rows a new comment makes, shared by the generator and the writer.
- :mod:`.generator`: ``generate_demo_database``, a deterministic file of any size.
- :mod:`.writer`: ``KotomiWriter``, the writes of a running Kotomi (a live load).

What the product itself knows of Kotomi (its table list, the read queries of a restore drill)
lives in :mod:`kotomi_backup_dagster.engine.kotomi`. Plain Python: no Dagster import.
"""

from .generator import DemoStats, generate_demo_database
from .schema import connect_like_kotomi
from .writer import KotomiWriter

__all__ = ["DemoStats", "KotomiWriter", "connect_like_kotomi", "generate_demo_database"]
