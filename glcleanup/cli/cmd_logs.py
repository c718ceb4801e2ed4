"""`glcleanup logs`: registry-log evidence of a DELETE loop, disk projection, optional truncate."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from glcleanup.cli.options import REGISTRY_HOST, command, json_mode
from glcleanup.cli.output import confirm, emit_json, emit_table, info, say
from glcleanup.durations import parse_duration
from glcleanup.errors import ExitCode
from glcleanup.logs import analysis as logs
from glcleanup.logs import loops as loop_state
from glcleanup.logs import truncate as logs_disk
from glcleanup.settings import Settings
from glcleanup.transport import open_host

_SOURCE_COLUMNS = ["source", "bytes", "growth_bytes_per_hour", "disk_free_bytes", "hours_to_full",
                   "window_start", "window_end"]
_LOOP_COLUMNS = ["path", "state", "requests", "per_minute", "codes", "user_agent", "first_seen", "last_seen"]


def logs_command(
    settings: Settings,
    sources: Annotated[list[str] | None, typer.Argument(
        help="Log on --registry-host: a file path, docker:NAME, or omnibus (default).",
        metavar="SRC", show_default=False)] = None,
    since: Annotated[str, typer.Option(
        "--since", metavar="DURATION", help="Window ending at the newest entry: 15m, 2h, 1d, or all.")] = "15m",
    truncate: Annotated[bool, typer.Option(
        "--truncate", help="Empty the log(s) after saving the evidence (plan first; needs --yes or a yes).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply --truncate without asking.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="--truncate even a file with no registry log lines (refused otherwise).")] = False,
) -> int:
    """Show registry-log evidence of a DELETE loop (exit 1 while a loop is active; an ended one is shown)."""
    window = parse_duration(since, allow_all=True)
    host = open_host(settings.registry_host or "local", settings.ssh_options)
    as_json = json_mode(settings)
    try:
        report = logs.analyze_sources(host, list(sources or ["omnibus"]), window, progress=ScanProgress(),
                                     unrecognised_ok=truncate)
        document: dict[str, Any] = report.to_json()
        if not as_json:
            render(report)
        if truncate:
            document["truncate"] = logs_disk.relieve(host, document, lambda t: _approve(t, yes, json_mode(settings)),
                                                  force=force)
            document["truncate"]["log_opts_fix"] = logs_disk.LOG_OPTS_FIX
            _render_truncate(document["truncate"], as_json)
    finally:
        host.close()
    if as_json:
        emit_json(document)
    return int(ExitCode.TROUBLE if report.looping else ExitCode.OK)


class ScanProgress:
    """Progress on stderr for a scan that takes longer than a second (in place on a terminal)."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.shown = 0.0

    def __call__(self, source: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.began < 1.0 or (now - self.shown < 0.5 and done < total):
            return
        self.shown = now
        line = f"scanning {source}: {100 * done // max(total, 1)}% of {_size(total)}"
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{line}" + ("\n" if done >= total else ""))
            sys.stderr.flush()
        else:
            info(line)


def render(report: logs.LogReport) -> None:
    rows = [{**s, "bytes": _size(s["bytes"]), "disk_free_bytes": _size(s["disk_free_bytes"]),
             "growth_bytes_per_hour": _size(s["growth_bytes_per_hour"])} for s in report.sources]
    emit_table(rows, _SOURCE_COLUMNS, title="Registry logs:")
    emit_table(loop_state.table_rows(report.loops), _LOOP_COLUMNS, title="\nDELETE loops:", empty="(none)")
    say(f"\n{report.verdict()}")


def _size(value: int | None) -> str | None:
    """Human bytes for the table (JSON keeps exact integers)."""
    if value is None:
        return None
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return None


def _approve(targets: list[logs_disk.TruncateTarget], yes: bool, as_json: bool) -> bool:
    info("Plan: empty these logs with `truncate -s 0` (the evidence summary is saved first):")
    for target in targets:
        writers = ", ".join(f"pid {w.pid} {w.command} ({'O_APPEND' if w.append else 'NO O_APPEND'})"
                            for w in target.writers) or "no writer found"
        real = f" -> {target.resolved} (a symlink: this file is emptied)" if target.resolved != target.path else ""
        info(f"  {target.path}{real}: {target.bytes} bytes; writers: {writers}")
        if target.nul_risk:
            info(f"  warning: {logs_disk.NUL_EXPLANATION}")
    return confirm("Truncate now?", yes=yes, json_mode=as_json,
                   hint="nothing changed: run again with --yes to truncate")


def _render_truncate(outcome: dict[str, Any], as_json: bool) -> None:
    if outcome["applied"]:
        info(f"Evidence saved to {outcome['evidence']}")
        for result in outcome["results"]:
            info(f"  {result['path']}: {result['bytes_before']} -> {result['bytes_after']} bytes; "
                 f"{result['explanation']}")
    if not as_json:
        say("\n" + logs_disk.LOG_OPTS_FIX)


def register(app: typer.Typer) -> None:
    command(app, "logs", uses=REGISTRY_HOST,
            short_help="The loop's evidence in the registry log, and the disk.")(logs_command)
