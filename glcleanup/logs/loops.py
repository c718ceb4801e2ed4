"""What a loop found in a registry log means right now: active (alarm) or ended (shown, not alarmed on).

The analysis (glcleanup.logs.analysis) gives each loop `active` (DELETEs still arriving: the last one
close to the window's end, and the window's end close to now for a live file) and `age_seconds` (since
`last_seen`). Everything that turns a loop into an exit code or words goes through here, so `logs`,
`scan` and the tables always agree.

`loop_is_active` is the one place that reads the key: a loop without it (an analysis from before the
key existed) counts as active, which was the behaviour then: never a false all-clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


def loop_is_active(loop: Mapping[str, Any]) -> bool:
    """Whether this loop still alarms (exit 1)."""
    return bool(loop.get("active", True))


def any_active(loops: Iterable[Mapping[str, Any]]) -> bool:
    return any(loop_is_active(loop) for loop in loops)


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def age_seconds(loop: Mapping[str, Any], now: datetime | None = None) -> float | None:
    """Seconds since the loop's last DELETE: the analysis's `age_seconds`, else from `last_seen`."""
    if isinstance(loop.get("age_seconds"), int | float):
        return float(loop["age_seconds"])
    last = _parse(loop.get("last_seen"))
    if last is None:
        return None
    return max(0.0, ((now or datetime.now(UTC)) - last).total_seconds())


def ago(seconds: float | None) -> str:
    """`12 s ago`, `4 min ago`, `3.5 h ago`, `2 d ago`."""
    if seconds is None:
        return "at an unknown time"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def state_text(loop: Mapping[str, Any], now: datetime | None = None) -> str:
    return "active" if loop_is_active(loop) else f"ended {ago(age_seconds(loop, now))}"


def table_rows(loops: Iterable[Mapping[str, Any]], now: datetime | None = None) -> list[dict[str, Any]]:
    """Rows for the loop tables: a `state` column and `last_seen` relative to now (JSON keeps the stamps)."""
    rows = []
    for loop in loops:
        last = loop.get("last_seen")
        rows.append({**loop, "state": state_text(loop, now),
                     "last_seen": f"{last} ({ago(age_seconds(loop, now))})" if last else None})
    return rows


def verdict(loops: Sequence[Mapping[str, Any]], sources: Sequence[Mapping[str, Any]]) -> str:
    """One line for humans, true to the exit code: `looping` only for a loop that is still active."""
    parts: list[str] = []
    active = [loop for loop in loops if loop_is_active(loop)]
    ended = [loop for loop in loops if not loop_is_active(loop)]
    if active:
        top = max(active, key=lambda loop: loop["per_minute"])
        more = f" (+{len(active) - 1} more)" if len(active) > 1 else ""
        parts.append(f"looping: {top['per_minute']} DELETE/min on {top['path']} from "
                     f"{top.get('user_agent') or 'unknown client'}{more}")
    elif ended:
        last = min(ended, key=lambda loop: age_seconds(loop) or 0.0)
        more = f" (+{len(ended) - 1} more)" if len(ended) > 1 else ""
        parts.append(f"no active loop: the DELETE loop on {last['path']} ended {ago(age_seconds(last))}{more}")
    else:
        parts.append("no DELETE loop in the window")
    captures = [str(s.get("source")) for s in sources if s.get("capture")]
    if captures:
        parts.append(f"{', '.join(captures)}: a capture (not written to lately), read as of its newest entry")
    soonest = [s["hours_to_full"] for s in sources if s.get("hours_to_full") is not None]
    if soonest and not captures:
        hours = min(soonest)
        parts.append(f"disk full in ~{hours:.0f} h" if hours >= 10 else f"disk full in ~{hours:.1f} h")
    return "; ".join(parts)


__all__ = ["age_seconds", "ago", "any_active", "loop_is_active", "state_text", "table_rows", "verdict"]
