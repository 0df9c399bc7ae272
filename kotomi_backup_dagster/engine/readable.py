"""Sizes and durations as people read them in messages and tables ("1.2 GiB", "3.5 h")."""

from __future__ import annotations

from datetime import timedelta


def readable_size(size: float) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # not reached: GiB is the last unit


def readable_duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    hours = seconds / 3600
    if abs(seconds) < 60:
        return f"{seconds:.0f} s"
    if abs(hours) < 1:
        return f"{seconds / 60:.0f} min"
    if abs(hours) < 72:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"
