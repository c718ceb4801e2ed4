"""`glcleanup scan`: list stuck container-repository deletions and the loop's evidence."""

from __future__ import annotations

from typing import Annotated

import typer

from glcleanup.cli.options import command, json_mode
from glcleanup.cli.output import emit_json, emit_table, info
from glcleanup.cli.progress import rich_progress
from glcleanup.durations import parse_duration
from glcleanup.errors import ExitCode
from glcleanup.ops.scan import ScanReport, ScanRequest, scan
from glcleanup.settings import Settings

_COLUMNS = ["id", "project", "path", "status", "status_updated_at", "delete_started_at",
            "failed_deletion_count", "next_delete_attempt_at", "sources"]
_LOOP_COLUMNS = ["path", "requests", "per_minute", "codes", "user_agent", "first_seen", "last_seen"]


def scan_command(
    settings: Settings,
    source: Annotated[str, typer.Option("--source", help="api, rails or all (both, merged by id).")] = "all",
    project: Annotated[list[str] | None, typer.Option(
        "--project", help="Only this project (full path); repeatable.")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Only projects under this group.")] = None,
    registry_log: Annotated[list[str] | None, typer.Option(
        "--registry-log",
        help="Registry log on --registry-host: a path, docker:NAME or omnibus; repeatable.")] = None,
    since: Annotated[str, typer.Option(
        "--since", help="Log window ending at the newest entry (15m, 2h, all).")] = "15m",
) -> int:
    """List container repositories stuck in deletion (exit 1 when something is stuck or looping)."""
    request = ScanRequest(source=source, projects=list(project or []), group=group,
                          registry_logs=list(registry_log or []), since=parse_duration(since, allow_all=True))
    with rich_progress() as bar:  # on a terminal only
        report = scan(settings, request, progress=bar)
    if json_mode(settings):
        emit_json(report.to_json())
    else:
        render(report)
    return int(ExitCode.TROUBLE if report.in_trouble else ExitCode.OK)


def render(report: ScanReport) -> None:
    version = report.gitlab.get("version") or "?"
    typer.echo(f"GitLab {version} at {report.gitlab.get('url') or '(runner only)'}")
    columns = [c for c in _COLUMNS if any(c in r for r in report.repositories)] or _COLUMNS[:4]
    emit_table(report.repositories, columns, title="Repositories in a deletion state:",
               empty="(none: nothing is stuck)")
    if report.cleanup_policies:
        emit_table(report.cleanup_policies, ["id", "path", "expiration_policy_cleanup_status",
                                             "cleanup_policy_enabled"],
                   title="\nCleanup-policy runs in progress (they loop the same way):")
    if report.loops:
        emit_table(report.loops, _LOOP_COLUMNS, title="\nLoop evidence in the registry log:")
    for warning in report.warnings:
        info(f"warning: {warning}")


def register(app: typer.Typer) -> None:
    command(app, "scan")(scan_command)
