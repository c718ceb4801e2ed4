"""`glcleanup requeue`: parse, call glcleanup.ops.requeue, render."""

from __future__ import annotations

from typing import Annotated

import typer

from glcleanup.cli.options import RAILS, REGISTRY_URL, command, json_mode
from glcleanup.cli.output import emit, emit_table, info, say
from glcleanup.errors import ExitCode
from glcleanup.ops.requeue import RequeueReport, RequeueRequest, requeue
from glcleanup.settings import Settings

_PLAN = ["id", "path", "action", "reason", "from", "to", "failed_deletion_count", "next_delete_attempt_at"]


def requeue_command(
    settings: Settings,
    project: Annotated[str, typer.Option("--project", help="The project's full path (group/sub/project).")],
    repository: Annotated[list[str] | None, typer.Option(
        "--repository", help="Only this container repository id; repeatable.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Requeue even though GitLab's probe replay says the registry would still loop.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply. Without it only the plan is shown.")] = False,
) -> int:
    """Put parked (delete_failed) or backed-off repositories back in GitLab's deletion queue, journaled, undoable."""
    report = requeue(settings, RequeueRequest(project=project, repositories=list(repository or []), apply=yes,
                                              force=force))
    emit(json_mode(settings), report.to_json(), lambda: render(report))
    if report.refused or (report.applied and not report.verified):
        return int(ExitCode.TROUBLE)
    return int(ExitCode.OK)


def render(report: RequeueReport) -> None:
    doc = report.to_json()
    if report.registry:
        info(f"probe replay on {report.registry['url']}: {report.registry['explanation']}")
    if report.refused:
        info(report.refused)
        return
    say(f"GitLab {doc['gitlab_version']} (retry cap: {doc['retry_cap']}), project {doc['project']}")
    columns = [c for c in _PLAN if any(c in r for r in doc["plan"])]
    emit_table(doc["plan"], columns, title="Plan (from -> to):", empty="(nothing parked or backed off)")
    if not doc["applied"]:
        if doc["plan"]:
            info("dry run: nothing was changed; add --yes to apply")
    else:
        say(f"\nRequeued; journal: {doc['journal']}")
        emit_table(doc["final"], ["id", "status"], title="Now:")
        info(f"undo with: glcleanup undo {doc['journal']}")
    for warning in doc["warnings"]:
        info(f"warning: {warning}")


def register(app: typer.Typer) -> None:
    command(app, "requeue", uses=(*RAILS, *REGISTRY_URL),
            short_help="Put parked or backed-off rows back in GitLab's queue, once it would not loop.")(requeue_command)
