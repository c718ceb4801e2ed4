"""`glcleanup undo`: parse, call glcleanup.ops.undo, render."""

from __future__ import annotations

from typing import Annotated

import typer

from glcleanup.cli.options import command, json_mode
from glcleanup.cli.output import emit_json, emit_table, info
from glcleanup.errors import ExitCode
from glcleanup.ops.undo import UndoReport, undo
from glcleanup.settings import Settings


def undo_command(
    settings: Settings,
    journal: Annotated[str | None, typer.Argument(help="Journal file (default: the latest).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Restore (otherwise only show it).")] = False,
) -> int:
    """Put back exactly what a stop-loop journal recorded (refused if the rows changed since)."""
    report = undo(settings, journal, apply=yes)
    if json_mode(settings):
        emit_json(report.to_json())
    else:
        render_undo(report)
    return int(ExitCode.OK)


def render_undo(report: UndoReport) -> None:
    doc = report.to_json()
    typer.echo(f"Journal {doc['journal']} ({doc['journal_state']}), project {doc['project']}")
    emit_table(doc["restore"], ["id", "name", "actions", "how", "from", "to"], title="Restore:",
               empty="(nothing to restore)")
    if doc["applied"]:
        typer.echo("Restored exactly as journaled." if doc["exact"] else f"Restored; differences: {doc['mismatches']}")
    elif doc["restore"]:
        info("dry run: nothing was changed; add --yes to restore")
    for warning in doc["warnings"]:
        info(f"warning: {warning}")


def register(app: typer.Typer) -> None:
    command(app, "undo")(undo_command)
