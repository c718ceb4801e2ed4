"""`glcleanup stop-loop`: parse, call glcleanup.ops.stop_loop, render."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from glcleanup.cli.options import RAILS, REGISTRY_URL, command, json_mode
from glcleanup.cli.output import ask_yes, can_ask, emit, emit_table, info, say
from glcleanup.errors import ExitCode
from glcleanup.ops.finish import DEFAULT_BATCH
from glcleanup.ops.stop_loop import DEFAULT_SETTLE, StopLoopReport, StopLoopRequest, stop_loop
from glcleanup.settings import Settings

_PLAN = ["id", "path", "action", "from", "to", "status_updated_at", "delete_started_at", "failed_deletion_count"]


def stop_loop_command(
    settings: Settings,
    project: Annotated[str, typer.Option("--project", metavar="PATH",
        help="The project's full path (group/sub/project).")],
    repository: Annotated[list[str] | None, typer.Option(
        "--repository", metavar="ID", help="Only this container repository id; repeatable.")] = None,
    mode: Annotated[str, typer.Option(
        "--mode", metavar="done|failed|finish",
        help="done: remove the rows as GitLab does on success (registry data is left for GC); "
             "failed: park them as delete_failed; finish: delete the tags in the registry through "
             "GitLab's third-party path, then remove the rows.")] = "done",
    settle: Annotated[float, typer.Option(
        "--settle", metavar="SECONDS",
        help="Seconds to watch for a running worker writing a row back.")] = DEFAULT_SETTLE,
    disable_cleanup_policy: Annotated[bool, typer.Option(
        "--disable-cleanup-policy", help="Also disable the project's cleanup policy and reset its runs.")] = False,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="--mode finish: tags per GitLab DeleteTagsService call.")] = DEFAULT_BATCH,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply. Without it only the plan is shown.")] = False,
) -> int:
    """Stop a container-repository deletion loop in GitLab's database: journaled, verified, undoable."""
    request = StopLoopRequest(project=project, repositories=list(repository or []), mode=mode, settle=settle,
                              disable_cleanup_policy=disable_cleanup_policy, apply=yes, batch_size=batch_size)
    interactive = not yes and can_ask(json_mode(settings))
    asked: list[bool] = []

    def ask(plan: StopLoopReport) -> bool:
        asked.append(_ask(plan))
        return asked[-1]

    report = stop_loop(settings, request, confirm=ask if interactive else None, on_progress=_progress)
    if asked and not asked[-1]:
        return int(ExitCode.OK)  # "n": the plan was shown once and "nothing changed" said
    emit(json_mode(settings), report.to_json(), lambda: render(report))
    if report.applied and not report.verified:
        return int(ExitCode.TROUBLE)
    if mode == "finish" and report.result.get("registry") and not report.verified:
        return int(ExitCode.TROUBLE)  # a registry error: the loop goes on for the rows left untouched
    return int(ExitCode.OK)


def _progress(event: dict[str, Any]) -> None:
    """finish.rb's progress events, drawn on stderr (stdout keeps the one result document)."""
    info(f"finish: repository {event.get('id')} {event.get('path')}: {event.get('done')}/{event.get('total')} "
         "tags deleted")


def _ask(report: StopLoopReport) -> bool:
    _render_plan(report)
    return ask_yes("Apply this plan?")


def _render_plan(report: StopLoopReport) -> None:
    doc = report.to_json()
    say(f"GitLab {doc['gitlab_version']} (retry cap: {doc['retry_cap']}), project {doc['project']}, "
               f"mode {doc['mode']}")
    columns = [c for c in _PLAN if any(c in r for r in doc["plan"])]
    emit_table(doc["plan"], columns, title="Plan (from -> to):", empty="(nothing to stop)")
    if doc["mode"] == "finish" and doc["plan"]:
        tags = [{"id": p["id"], "path": p["path"], "tag": t["tag"], "digest": t.get("digest") or "-"}
                for p in doc["plan"] for t in p.get("tags", [])]
        emit_table(tags, ["id", "path", "tag", "digest"], title="\nTags to delete in the registry (tag -> digest):",
                   empty="(no tags: the rows are removed at once)")
        info(f"warning: {doc['registry_note']}")


def render(report: StopLoopReport) -> None:
    doc = report.to_json()
    if not doc["plan"] and not doc["cleanup_policies"]:  # e.g. stop-loop twice: one line says it all
        parked = len(doc["already_failed"])
        say(f"nothing to stop in {doc['project']}: no repository is in delete_scheduled/delete_ongoing"
                   + (f" ({parked} already parked as delete_failed)" if parked else "")
                   + f" (GitLab {doc['gitlab_version']})")
        for warning in doc["warnings"]:
            info(f"warning: {warning}")
        return
    _render_plan(report)
    if doc["already_failed"]:
        emit_table(doc["already_failed"], ["id", "path", "status", "status_updated_at"],
                   title="\nAlready parked (delete_failed), left alone:")
    if doc["cleanup_policies"]:
        emit_table(doc["cleanup_policies"], ["id", "path", "from", "to"], title="\nCleanup-policy runs:")
    if not doc["applied"]:
        if doc["mode"] == "finish" and doc.get("registry"):
            _render_finish(doc)
            say(f"\nNo row removed; journal (tag -> digest): {doc['journal']}")
        elif doc["plan"]:
            info("dry run: nothing was changed; add --yes to apply")
    else:
        if doc["mode"] == "finish":
            _render_finish(doc)
        say(f"\nApplied; journal: {doc['journal']}")
        say(f"Verified after {doc['settle_seconds']:g} s settle, {doc['rounds']} round(s): "
                   f"{'yes' if doc['verified'] else 'NO'}")
        for item in doc["reapplied"]:
            say(f"  a worker wrote back {_ids(item['rows'])} at {item['at']}: re-applied")
        if doc.get("requeue_hint"):
            info(doc["requeue_hint"])
        if "left_in_registry" in doc:
            _render_leftovers(doc["left_in_registry"])
        info(f"undo with: glcleanup undo {doc['journal']}")
    for warning in doc["warnings"]:
        info(f"warning: {warning}")


def _render_finish(doc: dict[str, Any]) -> None:
    rows = [{"id": e["id"], "path": e["path"], "tags": e.get("tags_before"), "deleted": e.get("deleted"),
             "left": len(e["left"]) if isinstance(e.get("left"), list) else "?", "row": e.get("row")}
            for e in doc.get("registry", [])]
    emit_table(rows, ["id", "path", "tags", "deleted", "left", "row"], title="\nRegistry (through GitLab):")


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
    command(app, "stop-loop", uses=(*RAILS, *REGISTRY_URL),
            short_help="Stop a loop in GitLab's database: plan, journal, verify.")(stop_loop_command)
