"""`glcleanup check`: a monitoring plugin (Nagios/Icinga conventions) and node_exporter textfile metrics.

Its exit codes are the plugin API's, not glcleanup's table: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
Output is always the plugin text (a status line with perfdata after `|`, then one line per further
problem) unless `-o json` is asked for explicitly: monitoring agents run it without a terminal.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from glcleanup.cli.options import command
from glcleanup.cli.output import emit_json
from glcleanup.durations import parse_duration
from glcleanup.errors import GlcleanupError, UsageError
from glcleanup.settings import Settings

if TYPE_CHECKING:  # imported when the check runs: other commands start without prometheus_client
    from glcleanup.ops.check import CheckReport

UNKNOWN = 3
USAGE = ("usage: glcleanup check [--registry-log SRC]... [--since 15m] [--warn-rate N] [--crit-rate N] "
         "[--warn-hours H] [--crit-hours H] [--stuck-minutes M] [--source api|rails|all|none] "
         "[--stub-dir DIR] [--no-probe] [--prometheus FILE] [-o json]")


def check_command(
    settings: Settings,
    registry_log: Annotated[list[str] | None, typer.Option(
        "--registry-log", help="Registry log on --registry-host (a path, docker:NAME, omnibus); repeatable.")
    ] = None,
    since: Annotated[str, typer.Option("--since", help="Log window ending at the newest entry.")] = "15m",
    warn_rate: Annotated[str, typer.Option(
        "--warn-rate", help="WARNING above this many failing DELETE/min from GitLab in an active loop.")] = "5",
    crit_rate: Annotated[str, typer.Option("--crit-rate", help="CRITICAL above this many.")] = "60",
    warn_hours: Annotated[str, typer.Option(
        "--warn-hours", help="WARNING when the log's disk is full in fewer hours than this.")] = "72",
    crit_hours: Annotated[str, typer.Option("--crit-hours", help="CRITICAL below this many hours.")] = "24",
    stuck_minutes: Annotated[str, typer.Option(
        "--stuck-minutes", help="WARNING for rows in delete_scheduled/delete_ongoing longer than this.")] = "30",
    source: Annotated[str, typer.Option(
        "--source", help="Database state from: api (default, when --url is set), rails (boots the runner), "
                         "all, or none.")] = "api",
    project: Annotated[list[str] | None, typer.Option("--project", help="Only this project; repeatable.")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Only projects under this group.")] = None,
    stub_dir: Annotated[str | None, typer.Option(
        "--stub-dir", envvar="GLCLEANUP_STUB_DIR",
        help="Also warn when the glcleanup stub in this --dir on --registry-host is on past its end.")] = None,
    no_probe: Annotated[bool, typer.Option(
        "--no-probe", help="Do not replay GitLab's probe against --registry-url (it sends one DELETE).")] = False,
    prometheus: Annotated[str | None, typer.Option(
        "--prometheus", help="Also write the facts as metrics to this file (node_exporter textfile "
                             "collector), atomically.")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Loop paths with their own metric series.")] = 10,
) -> int:
    """Monitoring check: OK/WARNING/CRITICAL/UNKNOWN (exit 0/1/2/3) with perfdata; --prometheus for metrics."""
    from glcleanup.ops import metrics
    from glcleanup.ops.check import CheckRequest, add_unknown, run_check

    try:
        window = parse_duration(since)
        request = CheckRequest(
            registry_logs=list(registry_log or []), since=window, warn_rate=warn_rate, crit_rate=crit_rate,
            warn_hours=warn_hours, crit_hours=crit_hours, stuck_minutes=stuck_minutes, source=source,
            projects=list(project or []), group=group, stub_dir=stub_dir, probe=not no_probe)
        report = run_check(settings, request)
    except UsageError as exc:
        typer.echo(f"GLCLEANUP UNKNOWN - {exc}\n{USAGE}")
        return UNKNOWN
    except GlcleanupError as exc:
        typer.echo(f"GLCLEANUP UNKNOWN - {settings.redact(str(exc))}")
        return UNKNOWN
    if prometheus:
        try:
            metrics.write_textfile(prometheus, metrics.render(report, top=top))
        except GlcleanupError as exc:  # publishing the metrics is part of the job: UNKNOWN unless CRITICAL
            add_unknown(report, "prometheus", str(exc))
    if settings.output == "json":
        document = report.to_json()
        document["prometheus"] = prometheus
        emit_json(document)
    else:
        sys.stdout.write(render(report))
    return report.state


def render(report: CheckReport) -> str:
    """The plugin output, formatted by nagiosplugin: status line | perfdata, then the other problems."""
    import nagiosplugin
    from nagiosplugin.output import Output

    out = Output(logging.StreamHandler(io.StringIO()))
    out.add(report.check)
    lines = [str(r) for r in report.check.results if r.state != nagiosplugin.Ok]
    out.add_longoutput(lines[1:])
    return str(out)


def register(app: typer.Typer) -> None:
    command(app, "check")(check_command)
