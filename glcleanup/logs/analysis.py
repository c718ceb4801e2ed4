"""Loop evidence from registry logs: which repository GitLab keeps DELETE-ing, how fast, and
how soon the log fills the disk.

Public entry point (also used by `scan --registry-log`):

    analyze_sources(host, sources, since) -> LogReport

* `host`: where the logs live (`LocalHost` reads files directly with seeks and mmap; any other
  Host, e.g. `SSHHost`, runs the reader ON that host and gets back only a small JSON summary).
* `sources`: each a file path, `docker:NAME` (the container's json-file log, found with
  `docker inspect --format '{{.LogPath}}' NAME` on that host) or `omnibus`
  (`/var/log/gitlab/registry/current`).
* `since`: the window length; it ends at the NEWEST entry of each source, not the wall clock.
  None reads the whole file.

`LogReport.loops` items (design §6): `path`, `requests`, `per_minute`, `codes` (status -> count,
keys are strings in JSON), `user_agent`, `first_seen`, `last_seen`, `active` (DELETEs still arriving
now), `age_seconds` (since `last_seen`, by the clock of the host the log is on), plus `source` and
`failures`.
`LogReport.sources` items: `source`, `bytes`, `growth_bytes_per_hour`, `disk_free_bytes`,
`hours_to_full`, plus `path`, `window_start`, `window_end`, `bytes_read`, `transport`, `nul_bytes`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from glcleanup import gitlab_facts
from glcleanup.errors import NotFoundError, UsageError
from glcleanup.logs import loops as loop_state
from glcleanup.logs import reader as logs_agent
from glcleanup.transport import Host, LocalHost

OMNIBUS_LOG = "/var/log/gitlab/registry/current"
MIN_FAILURES = 3  # repeated failing DELETEs on one path from one client: a retry loop
# A loop is active while its DELETEs keep coming: its last one is at most this close to the log's newest
# entry, and that entry this close to now. Several intervals of the loop's own rate, within these bounds.
ACTIVE_MIN_GAP = 5.0
ACTIVE_MAX_GAP = 300.0
# A file nobody wrote to for this long is a capture (a saved log, not a running registry's): its loops are
# judged as of its newest entry, "as before", and the verdict says it is a capture.
CAPTURE_AGE = 3600.0
_DOCKER_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")


@dataclass
class LogReport:
    """What the registry logs prove: per-source size/growth and per-repository DELETE loops."""

    sources: list[dict[str, Any]] = field(default_factory=list)
    loops: list[dict[str, Any]] = field(default_factory=list)

    @property
    def looping(self) -> bool:
        """An ACTIVE loop (exit 1); an ended one is shown, not alarmed on (glcleanup.logs.loops)."""
        return loop_state.any_active(self.loops)

    @property
    def active_loops(self) -> list[dict[str, Any]]:
        return [loop for loop in self.loops if loop.get("active")]

    def to_json(self) -> dict[str, Any]:
        return {"sources": self.sources, "loops": self.loops}

    def verdict(self) -> str:
        """One line for humans: what loops, how fast, from which GitLab, and when the disk fills."""
        return loop_state.verdict(self.loops, self.sources)


def _hours(value: float) -> str:
    return f"{value:.0f} h" if value >= 10 else f"{value:.1f} h"


def resolve_source(host: Host, spec: str) -> str:
    """A source spec -> the log file's path on `host` (UsageError for malformed specs)."""
    text = spec.strip()
    if not text:
        raise UsageError("empty log source")
    if text == "omnibus":
        return OMNIBUS_LOG
    if text.startswith("docker:"):
        name = text[len("docker:"):]
        if not _DOCKER_NAME.match(name):
            raise UsageError(f"invalid container name in {spec!r}")
        result = host.run(["docker", "inspect", "--format", "{{.LogPath}}", name], timeout=60)
        path = result.text.strip()
        if result.exit_code != 0:
            raise NotFoundError(f"docker inspect {name} on {host.name} failed: "
                                f"{result.error_text.strip() or result.text.strip()}")
        if not path:
            raise NotFoundError(
                f"container {name} has no json-file log (another log driver, e.g. journald): read it with "
                f"`journalctl -o cat CONTAINER_NAME={name} > FILE` and pass FILE")
        return path
    if "\x00" in text or "\n" in text:
        raise UsageError(f"invalid log path {spec!r}")
    return text


def read_summary(host: Host, path: str, since: timedelta | None,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The agent's summary of one file: read here for a LocalHost, on the host otherwise.

    `progress(done, total)` hears about local scans and, through the reader's progress lines, remote ones
    (the POSIX-tools fallback has none).
    """
    seconds = None if since is None else since.total_seconds()
    if isinstance(host, LocalHost):
        try:
            summary = logs_agent.analyze_path(path, seconds, progress=progress)
        except OSError as exc:
            raise NotFoundError(f"cannot read {path}: {exc.strerror or exc}") from exc
        summary["transport"] = "local"
        return summary
    from glcleanup.logs.remote import analyze_remote

    return analyze_remote(host, path, seconds, progress)


def analyze_sources(host: Host, sources: list[str], since: timedelta | None,
                    progress: Callable[[str, int, int], None] | None = None,
                    unrecognised_ok: bool = False) -> LogReport:
    """Evidence from every source (see the module docstring for the contract).

    `progress(source, bytes scanned, bytes to scan)` is called while a file is scanned. A source
    with no registry line is an error (no false all-clear) unless `unrecognised_ok` (truncate's own
    check then refuses it with its reason, or --force).
    """
    report = LogReport()
    for spec in sources:
        path = resolve_source(host, spec)
        try:
            summary = read_summary(host, path, since, _for_source(progress, spec))
        except NotFoundError as exc:
            if spec.strip() != "omnibus":
                raise
            raise NotFoundError(f"{exc} (the Omnibus registry log); name the log instead: a file path on "
                                "the registry host, or docker:NAME for a registry container") from exc
        if int(summary.get("size") or 0) > 0 and summary.get("newest") is None and not unrecognised_ok:
            # Not one timestamped registry line: "no loop" would be a false all-clear.
            raise NotFoundError(f"{spec}: no line of {path} on {host.name} looks like a registry log (docker "
                                "json-file, logrus text or JSON, access log, Omnibus current): is it the right file?")
        report.sources.append(source_entry(spec, summary))
        report.loops.extend(mark_activity(loops_from(spec, summary["groups"]), summary))
    report.loops.sort(key=lambda loop: (-loop["per_minute"], loop["path"]))
    return report


def _for_source(progress: Callable[[str, int, int], None] | None, spec: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    report = progress

    def tick(done: int, total: int) -> None:
        report(spec, done, total)

    return tick


def _iso(epoch: float | None) -> str | None:
    if epoch is None or epoch < 0:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def source_entry(spec: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Disk relief numbers: growth over the window and hours until the filesystem is full."""
    size = int(summary["size"])
    newest, oldest = summary.get("newest"), summary.get("oldest")
    growth: float | None = None
    if newest is not None and oldest is not None and newest - oldest >= 1.0:
        growth = (size - int(summary.get("offset") or 0)) / ((newest - oldest) / 3600.0)
    free = summary.get("disk_free_bytes")
    hours = round(free / growth, 1) if free is not None and growth else None
    capture = is_capture(summary)
    return {
        "source": spec,
        "bytes": size,
        "growth_bytes_per_hour": round(growth) if growth is not None else None,
        "disk_free_bytes": free,
        "hours_to_full": hours,
        "path": summary.get("path"),
        "window_start": _iso(oldest),
        "window_end": _iso(newest),
        "bytes_read": summary.get("bytes_read"),
        "delete_lines": summary.get("delete_lines"),
        "nul_bytes": summary.get("nul_bytes"),
        "registry_lines": summary.get("registry_lines", True),
        "long_lines_skipped": summary.get("long_lines", 0),
        "transport": summary.get("transport"),
        "capture": capture,
    }


def _failed(status: int) -> bool:
    """What GitLab does not count as a successful delete is retried."""
    return not gitlab_facts.delete_counts_as_success(status)


def loops_from(spec: str, groups: list[list[Any]]) -> list[dict[str, Any]]:
    """Group DELETEs by (repository, user agent); keep those failing repeatedly.

    A registry writes each request twice (app log and access log); the access log has every
    request, so it is used when present and the app log only when it is the sole record.
    """
    kinds = {g[3] for g in groups}
    kind = "access" if "access" in kinds else "app"
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for path, agent, status, group_kind, count, first, last in groups:
        if group_kind != kind:
            continue
        item = merged.setdefault((path, agent), {"codes": {}, "requests": 0, "first": None, "last": None})
        item["requests"] += count
        item["codes"][str(status)] = item["codes"].get(str(status), 0) + count
        if first >= 0 and (item["first"] is None or first < item["first"]):
            item["first"] = first
        if last >= 0 and (item["last"] is None or last > item["last"]):
            item["last"] = last
    loops = []
    for (path, agent), item in merged.items():
        failures = sum(n for code, n in item["codes"].items() if _failed(int(code)))
        if failures < MIN_FAILURES:
            continue
        loops.append({
            "path": path,
            "requests": item["requests"],
            "per_minute": _per_minute(item["requests"], item["first"], item["last"]),
            "codes": dict(sorted(item["codes"].items())),
            "user_agent": agent or None,
            "first_seen": _iso(item["first"]),
            "last_seen": _iso(item["last"]),
            "failures": failures,
            "source": spec,
            "_last": item["last"],
        })
    return loops


def active_gap(per_minute: float) -> float:
    """How long a loop may be silent and still count as running: 5 of its intervals, 5 s to 5 min."""
    interval = 60.0 / per_minute if per_minute > 0 else ACTIVE_MAX_GAP
    return min(max(ACTIVE_MIN_GAP, 5 * interval), ACTIVE_MAX_GAP)


def is_capture(summary: dict[str, Any]) -> bool:
    """Not written to for CAPTURE_AGE by the clock of the host it is on (mtime unknown: a live log)."""
    mtime, now = summary.get("mtime"), summary.get("now")
    return mtime is not None and now is not None and float(now) - float(mtime) > CAPTURE_AGE


def mark_activity(loops: list[dict[str, Any]], summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Add `active` and `age_seconds` to each loop of one source.

    Active: its last DELETE is close to the log's newest entry AND that entry is close to now (the
    reader's clock, on the log's host): an old capture or a quiet log shows an ended loop, not a
    running one. `age_seconds` is now - last_seen.
    """
    newest = summary.get("newest")
    now = float(newest) if newest is not None and is_capture(summary) else float(summary.get("now") or time.time())
    for loop in loops:
        last = loop.get("_last")
        gap = active_gap(float(loop["per_minute"]))
        loop["age_seconds"] = round(max(now - last, 0.0), 1) if last is not None else None
        loop["active"] = bool(last is not None and newest is not None
                              and newest - last <= gap and now - newest <= gap)
        loop.pop("_last", None)
    return loops


def _per_minute(requests: int, first: float | None, last: float | None) -> float:
    """Rate between the first and last request (n requests span n-1 intervals)."""
    if first is None or last is None or last - first < 1.0:
        return float(requests)
    return round((requests - 1) / ((last - first) / 60.0), 1)


__all__ = ["OMNIBUS_LOG", "LogReport", "analyze_sources", "resolve_source"]
