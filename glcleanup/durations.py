"""Durations as admins type them: 90s, 15m, 2h, 1d, 1h30m; `all` means no limit."""

from __future__ import annotations

import re
from datetime import timedelta

from glcleanup.errors import UsageError

_PART = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_DURATION = timedelta(days=3660)  # ten years: longer is a typo, and timedelta overflows past 999999999 days
MAX_TEXT = 40


def parse_duration(text: str, *, allow_all: bool = False) -> timedelta | None:
    """Parse `15m`-style durations; None for `all` when allowed; UsageError otherwise."""
    value = text.strip().lower()
    if len(value) > MAX_TEXT:
        raise UsageError(f"invalid duration {text[:MAX_TEXT]!r}...: too long")
    if allow_all and value == "all":
        return None
    if value.isdigit():  # `--since 15`: minutes or seconds? refuse rather than guess
        raise UsageError(f"duration {text!r} has no unit: write {value}s, {value}m, {value}h or {value}d")
    if not value or _PART.sub("", value):
        raise UsageError(f"invalid duration {text!r}: use forms like 90s, 15m, 2h, 1d" +
                         (" or all" if allow_all else ""))
    total = timedelta()
    for amount, unit in _PART.findall(value):
        try:
            total += timedelta(**{_UNITS[unit]: int(amount)})
        except OverflowError:
            total = MAX_DURATION * 2
        if total > MAX_DURATION:
            raise UsageError(f"duration {text!r} is longer than {MAX_DURATION.days} days")
    if total <= timedelta():
        raise UsageError(f"duration must be positive: {text!r}")
    return total
