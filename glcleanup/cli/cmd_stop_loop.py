"""`glcleanup stop-loop`: parse, call glcleanup.ops.stop_loop, render."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from glcleanup.cli.options import command, json_mode
from glcleanup.cli.output import ask_yes, can_ask, emit_json, emit_table, info
from glcleanup.errors import ExitCode
from glcleanup.ops.stop_loop import DEFAULT_SETTLE, StopLoopReport, StopLoopRequest, stop_loop
from glcleanup.settings import Settings

_PLAN = ["id", "path", "action", "from", "to", "status_updated_at", "delete_started_at", "failed_deletion_count"]


def stop_loop_command(
    settings: Settings,
    project: Annotated[str, typer.Option("--project", help="The project's full path (group/sub/project).")],
    repository: Annotated[list[str] | None, typer.Option(
        "--repository", help="Only this container repository id; repeatable.")] = None,
    mode: Annotated[str, typer.Option(
        "--mode", help="done: remove the rows as GitLab does on success (registry data is left for GC); "
                       "failed: park them as delete_failed.")] = "done",
    settle: Annotated[float, typer.Option(
        "--settle", help="Seconds to watch for a running worker writing a row back.")] = DEFAULT_SETTLE,
    disable_cleanup_policy: Annotated[bool, typer.Option(
        "--disable-cleanup-policy", help="Also disable the project's cleanup policy and reset its runs.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply. Without it only the plan is shown.")] = False,
) -> int:
    """Stop a container-repository deletion loop in GitLab's database: journaled, verified, undoable."""
    request = StopLoopRequest(project=project, repositories=list(repository or []), mode=mode, settle=settle,
                              disable_cleanup_policy=disable_cleanup_policy, apply=yes)
    interactive = not yes and can_ask(json_mode(settings))
    report = stop_loop(settings, request, confirm=_ask if interactive else None)
    if json_mode(settings):
        emit_json(report.to_json())
    else:
        render(report)
    if report.applied and not report.verified:
        return int(ExitCode.TROUBLE)
    return int(ExitCode.OK)


def _ask(report: StopLoopReport) -> bool:
    _render_plan(report)
    return ask_yes("Apply this plan?")


def _render_plan(report: StopLoopReport) -> None:
    doc = report.to_json()
    typer.echo(f"GitLab {doc['gitlab_version']} (retry cap: {doc['retry_cap']}), project {doc['project']}, "
               f"mode {doc['mode']}")
    columns = [c for c in _PLAN if any(c in r for r in doc["plan"])]
    emit_table(doc["plan"], columns, title="Plan (from -> to):", empty="(nothing to stop)")


def render(report: StopLoopReport) -> None:
    doc = report.to_json()
    _render_plan(report)
    if doc["already_failed"]:
        emit_table(doc["already_failed"], ["id", "path", "status", "status_updated_at"],
                   title="\nAlready parked (delete_failed), left alone:")
    if doc["cleanup_policies"]:
        emit_table(doc["cleanup_policies"], ["id", "path", "from", "to"], title="\nCleanup-policy runs:")
    if not doc["applied"]:
        if doc["plan"]:
            info("dry run: nothing was changed; add --yes to apply")
    else:
        typer.echo(f"\nApplied; journal: {doc['journal']}")
        typer.echo(f"Verified after {doc['settle_seconds']:g} s settle, {doc['rounds']} round(s): "
                   f"{'yes' if doc['verified'] else 'NO'}")
        for item in doc["reapplied"]:
            typer.echo(f"  a worker wrote back {_ids(item['rows'])} at {item['at']}: re-applied")
        if doc.get("requeue_hint"):
            info(doc["requeue_hint"])
        if "left_in_registry" in doc:
            _render_leftovers(doc["left_in_registry"])
        info(f"undo with: glcleanup undo {doc['journal']}")
    for warning in doc["warnings"]:
        info(f"warning: {warning}")


def _ids(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['id']} ({r.get('status')})" for r in rows)


def _render_leftovers(left: dict[str, Any]) -> None:
    rows = [{"path": r["path"], "tags": len(r.get("tags", [])) if "tags" in r else None,
             "digests": ",".join(sorted({t["digest"] for t in r.get("tags", []) if t.get("digest")})) or None,
             "note": r.get("error")} for r in left["repositories"]]
    emit_table(rows, ["path", "tags", "digests", "note"], title="\nLeft in the registry (for garbage collection):")
    if left.get("error"):
        info(f"note: {left['error']}")
    info(left["note"])


def register(app: typer.Typer) -> None:
    command(app, "stop-loop")(stop_loop_command)
