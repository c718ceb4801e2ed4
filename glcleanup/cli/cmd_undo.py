"""`glcleanup undo`: parse, call glcleanup.ops.undo, render."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from glcleanup.cli.options import RAILS, command, json_mode
from glcleanup.cli.output import ask_yes, can_ask, emit, emit_json, emit_table, info, say
from glcleanup.errors import ExitCode
from glcleanup.journal.store import list_journals
from glcleanup.ops.undo import UndoReport, undo
from glcleanup.paths import journal_dir
from glcleanup.settings import Settings


def undo_command(
    settings: Settings,
    journal: Annotated[str | None, typer.Argument(
        help="Journal file (default: the newest applied, not yet undone one).", metavar="JOURNAL",
        show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Restore (otherwise only show it).")] = False,
    list_only: Annotated[bool, typer.Option(
        "--list", help="List the journals (time, project, mode, state), newest first; changes nothing.")] = False,
) -> int:
    """Put back exactly what a stop-loop journal recorded (refused if the rows changed since)."""
    if list_only:
        return render_list(list_journals(), json_mode(settings))
    report = undo(settings, journal, apply=yes)
    if not yes and report.result.get("restore") and not report.already_undone and can_ask(json_mode(settings)):
        render_undo(report, dry_run_hint=False)  # like stop-loop: the plan, then one question
        if not ask_yes("Restore these rows?"):
            return int(ExitCode.OK)
        report = undo(settings, report.journal, apply=True)  # the same journal, whatever is newer now
    emit(json_mode(settings), report.to_json(), lambda: render_undo(report))
    return int(ExitCode.OK)


def render_list(entries: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        emit_json({"journals": entries})
    else:
        emit_table(entries, ["time", "project", "mode", "state", "journal"], title=f"Journals in {journal_dir()}:",
                   empty="(none)")
    return int(ExitCode.OK)


def render_undo(report: UndoReport, dry_run_hint: bool = True) -> None:
    doc = report.to_json()
    if report.already_undone:
        say(f"{doc['journal']} was already undone at {report.result.get('undone_at')}; nothing changed")
        return
    say(f"Journal {doc['journal']} ({doc['journal_state']}), project {doc['project']}")
    emit_table(doc["restore"], ["id", "name", "actions", "how", "from", "to", "columns"], title="Restore:",
               empty="(nothing to restore)")
    if doc["applied"]:
        say("Restored exactly as journaled." if doc["exact"] else f"Restored; differences: {doc['mismatches']}")
    elif doc["restore"] and dry_run_hint:
        info("dry run: nothing was changed; add --yes to restore")
    for warning in doc["warnings"]:
        info(f"warning: {warning}")


def register(app: typer.Typer) -> None:
    command(app, "undo", uses=RAILS, short_help="Put back what a stop-loop journal recorded; --list.")(undo_command)
