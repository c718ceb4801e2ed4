"""The check's facts as Prometheus metrics for node_exporter's textfile collector.

Rendered with `prometheus_client` (its own registry, nothing global) and written atomically: a
temporary file in the target's directory (named `.NAME.*.tmp`, which the collector ignores: it
reads `*.prom` only), fsync'd, then renamed over the target. A failed write leaves the old file as
it was and no temporary behind.

Label values are bounded: repository paths are the only open-ended ones, and only the `top` loops
by rate get their own series; the rest are summed under `path="_other"`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from glcleanup.errors import GlcleanupError
from glcleanup.ops.check import STATUSES, CheckReport, failing_rate

OTHER = "_other"
FACETS = ("logs", "repositories", "probe", "stub")


class MetricsWriteError(GlcleanupError):
    """The textfile could not be written (the old one is untouched)."""


def _capped(loops: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """The `top` loops by rate; the others folded into one `_other` series (rates and counts summed)."""
    ranked = sorted(loops, key=lambda loop: -float(loop["per_minute"]))
    head, rest = ranked[:top], ranked[top:]
    if rest:
        head.append({"path": OTHER, "user_agent": OTHER, "per_minute": sum(float(x["per_minute"]) for x in rest),
                     "failing": sum(failing_rate(x) for x in rest), "active": any(x.get("active") for x in rest),
                     "age_seconds": min((x["age_seconds"] for x in rest if x.get("age_seconds") is not None),
                                        default=None)})
    return head


def render(report: CheckReport, top: int = 10) -> bytes:
    """The Prometheus text exposition of one check run."""
    registry = CollectorRegistry(auto_describe=True)

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    gauge("glcleanup_check_state", "Verdict of the last check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.").set(
        report.state)
    gauge("glcleanup_check_timestamp_seconds", "When the last check ran (Unix time).").set(report.timestamp)
    gauge("glcleanup_check_duration_seconds", "How long the last check took.").set(report.duration_seconds)
    up = gauge("glcleanup_check_facet_up", "1 when the facet was configured and could be read, 0 when it failed.",
               ("facet",))
    for facet, ok in report.facets.items():
        up.labels(facet).set(int(ok))
    rate = gauge("glcleanup_loop_delete_requests_per_minute", "DELETE requests per minute of a loop in the window.",
                 ("path", "user_agent"))
    failing = gauge("glcleanup_loop_failing_delete_requests_per_minute",
                    "DELETEs per minute of a loop that GitLab counts as failed (not 2xx or 404).",
                    ("path", "user_agent"))
    active = gauge("glcleanup_loop_active", "1 while the loop's DELETEs are still arriving.", ("path",))
    age = gauge("glcleanup_loop_age_seconds", "Seconds since the loop's last DELETE.", ("path",))
    for loop in _capped(report.loops, top):
        agent = str(loop.get("user_agent") or "")
        rate.labels(loop["path"], agent).set(float(loop["per_minute"]))
        failing.labels(loop["path"], agent).set(loop.get("failing", failing_rate(loop)))
        active.labels(loop["path"]).set(int(bool(loop.get("active"))))
        if loop.get("age_seconds") is not None:
            age.labels(loop["path"]).set(float(loop["age_seconds"]))
    size = gauge("glcleanup_log_bytes", "Size of the registry log.", ("source",))
    growth = gauge("glcleanup_log_growth_bytes_per_second", "Growth of the registry log over the window.",
                   ("source",))
    free = gauge("glcleanup_log_disk_free_bytes", "Free space on the log's filesystem.", ("source",))
    full = gauge("glcleanup_log_seconds_to_full", "Seconds until the log fills its disk at the window's growth.",
                 ("source",))
    for source in report.sources:
        name = str(source["source"])
        size.labels(name).set(int(source["bytes"]))
        for metric, key, scale in ((growth, "growth_bytes_per_hour", 1 / 3600), (free, "disk_free_bytes", 1),
                                   (full, "hours_to_full", 3600)):
            if source.get(key) is not None:  # base units (seconds), as promtool asks
                metric.labels(name).set(float(source[key]) * scale)
    if report.facets.get("repositories"):
        rows = gauge("glcleanup_repositories", "Container repositories in a deletion state.", ("status",))
        for status in STATUSES:
            rows.labels(status).set(report.repositories.get(status, 0))
        gauge("glcleanup_repositories_stuck",
              "Repositories in delete_scheduled/delete_ongoing for longer than --stuck-minutes.").set(len(report.stuck))
    if report.probe is not None:
        gauge("glcleanup_probe_loop_risk", "1 when the registry says yes to GitLab's probe and fails the tag DELETE."
              ).set(int(bool(report.probe.get("loop_risk"))))
    if report.stub is not None:
        gauge("glcleanup_stub_on", "1 while a glcleanup stub is on.").set(int(report.stub["state"] == "on"))
        gauge("glcleanup_stub_overdue", "1 when the stub is on past its planned end.").set(
            int(bool(report.stub.get("overdue"))))
    return bytes(generate_latest(registry))


def write_textfile(path: str, data: bytes) -> None:
    """Atomically replace `path` with `data` (MetricsWriteError, old file untouched, on any failure)."""
    target = Path(path)
    if target.is_dir():
        raise MetricsWriteError(f"--prometheus {path} is a directory; name a file such as {path}/glcleanup.prom")
    if target.exists() and not os.access(target, os.W_OK):
        raise MetricsWriteError(f"cannot write --prometheus {path}: permission denied (left as it was)")
    directory = target.parent
    temp: str | None = None
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, target)
        temp = None
    except OSError as exc:
        raise MetricsWriteError(f"cannot write --prometheus {path}: {exc.strerror or exc} "
                                "(the old file, if any, is left as it was)") from exc
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)


__all__ = ["FACETS", "MetricsWriteError", "render", "write_textfile"]
