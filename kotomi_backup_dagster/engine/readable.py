"""Sizes and durations as people read them in messages and tables ("1.2 GiB", "2 h 15 min")."""

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
    """`45 s`, `20 min`, `3 h`, `2 h 15 min`, `36 h`, `8 days`, `10.5 days`: exact to the
    minute below three days (`2.2 h` read as 2 h 12 min where 2 h 15 min was meant)."""
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{sign}{minutes} min"
    if minutes < 72 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{sign}{hours} h" + (f" {rest} min" if rest else "")
    days = seconds / 86400
    return f"{sign}{days:.0f} days" if days == round(days) else f"{sign}{days:.1f} days"
