"""Values shaped like Kotomi's: UUIDv4 keys and the two timestamp forms of its file."""

from __future__ import annotations

import random

from kotomi_backup_dagster.demo.values import (
    format_default_timestamp,
    format_go_timestamp,
    random_uuid4,
)


def test_value_helpers() -> None:
    rng = random.Random(3)
    u = random_uuid4(rng)
    assert len(u) == 36 and u[14] == "4" and u[19] in "89ab"
    assert random_uuid4(random.Random(3)) == u
    assert format_default_timestamp(0) == "1970-01-01 00:00:00"
    assert format_go_timestamp(0, 120_000_000, -420) == "1969-12-31 17:00:00.12-07:00"
    assert format_go_timestamp(0) == "1970-01-01 00:00:00+00:00"
