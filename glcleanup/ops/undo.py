"""`undo`: put back what a stop-loop journal recorded, in one transaction (undo.rb), or say why not.

A journal is data (design.md §7.8): undo runs only the runner the current settings name, never the
one a journal records, and hands Ruby nothing but the journal's rows, which undo.rb checks against
the database (project, ids, columns, types) before it writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glcleanup import validate
from glcleanup.errors import Interrupted, JournalError, UsageError
from glcleanup.gitlab.rails import runner_from_settings
from glcleanup.gitlab_facts import LOOPING_STATES
from glcleanup.journal.lock import database_key, project_lock
from glcleanup.journal.store import ROLLED_BACK, UNDONE, Journal, now_iso
from glcleanup.journal.store import latest_for_undo as _latest
from glcleanup.ops.report import RunnerResult
from glcleanup.settings import Settings

UNDOABLE_COMMANDS = ("stop-loop", "requeue")
_UNDO_KEYS = ("project", "columns", "policy_columns", "changes", "rows", "after", "policies", "policies_after")


@dataclass
class UndoReport(RunnerResult):
    journal: str
    result: dict[str, Any]
    state: str
    warnings: list[str] = field(default_factory=list)

    @property
    def already_undone(self) -> bool:
        return bool(self.result.get("already_undone"))

    def to_json(self) -> dict[str, Any]:
        return {"journal": self.journal, "project": self.result.get("project", {}).get("full_path"),
                "already_undone": self.already_undone,
                "restore": self.result.get("restore", []), "applied": self.applied,
                "exact": self.result.get("exact"), "mismatches": self.result.get("mismatches", []),
                "journal_state": self.state, "warnings": self.warnings}


def _shown(value: object) -> str:
    """A journal's string as data in a message: escaped and cut, never interpreted."""
    return repr(str(value)[:120])


def where_to_run(settings: Settings, data: dict[str, Any]) -> list[str]:
    """Only the current settings choose the runner; say where they differ from the journal's (warnings).

    Without a configured rails host nothing runs: the journal's own host and runner are named, and the
    admin has to give them explicitly (a crafted journal must never choose what runs as root)."""
    recorded_host, recorded_runner = data.get("rails_host"), data.get("rails_runner")
    if not settings.rails_host:
        named = f" (it was written via --rails-host {_shown(recorded_host)}" + (
            f" --rails-runner {_shown(recorded_runner)})" if recorded_runner else ")") if recorded_host else ""
        raise UsageError("undo runs only the runner your settings name, never the one a journal records: pass "
                         f"--rails-host (and --rails-runner) or set GLCLEANUP_RAILS_HOST{named}; nothing was run")
    warnings = []
    if recorded_host and str(recorded_host) != settings.rails_host:
        warnings.append(f"the journal was written via rails host {_shown(recorded_host)}; undoing via "
                        f"{_shown(settings.rails_host)} as your settings say")
    if recorded_runner and str(recorded_runner) != settings.rails_runner:
        warnings.append(f"the journal was written with runner {_shown(recorded_runner)}; using "
                        f"{_shown(settings.rails_runner)} as your settings say")
    return warnings


def undo(settings: Settings, journal_path: str | None, apply: bool) -> UndoReport:
    """Dry-run by default; with `apply`, restore the journaled rows in one transaction and mark it undone."""
    journal = Journal.load(journal_path) if journal_path else _latest()
    data = journal.data
    if journal.state == UNDONE:  # undoing twice is not an error: the rows are already back
        return UndoReport(str(journal.path), {"already_undone": True, "undone_at": data.get("undone_at"),
                                              "project": data.get("project") or {}}, UNDONE)
    if journal.state == ROLLED_BACK:
        raise JournalError(f"{journal.path}: that run was rolled back and changed nothing; nothing to undo")
    if data.get("command", "stop-loop") not in UNDOABLE_COMMANDS:
        raise UsageError(f"{journal.path} records a {_shown(data.get('command'))} run; undo restores stop-loop "
                         "and requeue journals only; nothing changed")
    project = validate.project_path(str(data.get("project", {}).get("full_path") or data.get("project_path")))
    warnings = where_to_run(settings, data)
    host = str(settings.rails_host)
    runner = runner_from_settings(settings)
    params = {"journal": {k: data[k] for k in _UNDO_KEYS if k in data}, "apply": apply}
    try:
        with project_lock(host, project, "undo", key=database_key(runner.host, host)):
            try:
                result: dict[str, Any] = runner.run("undo", params)
            except KeyboardInterrupt as exc:
                if not apply:
                    raise Interrupted(f"{exc or 'SIGINT'} during the undo dry run; nothing was changed") from None
                raise Interrupted(
                    f"{exc or 'SIGINT'} while undo ran: the runner was stopped; the restore is one transaction, "
                    f"so either every row is back or none is; check with `glcleanup scan --source rails "
                    f"--project {project}`; {journal.path} is not marked undone (running `glcleanup undo "
                    f"{journal.path}` again refuses if the rows are already back)") from None
            if result.get("never_applied"):
                data.update(state=ROLLED_BACK, checked_at=now_iso())
                journal.save()
            elif apply and result.get("applied"):
                data.update(state=UNDONE, undone_at=now_iso(), undo_result={
                    "exact": result.get("exact"), "mismatches": result.get("mismatches")})
                journal.save()
    finally:
        runner.host.close()
    report = UndoReport(str(journal.path), result, journal.state, warnings)
    if data.get("mode") == "finish" and report.applied:
        report.warnings.append("stop-loop --mode finish deleted the tags in the registry: undo restored the "
                               "GitLab rows only; the journal's `registry` section lists every tag -> digest")
    if result.get("never_applied"):
        report.warnings.append("the journaled change was never committed (every row is as journaled): "
                               "nothing to undo; the journal is marked rolled back")
    elif any(e.get("to") in LOOPING_STATES for e in result.get("restore", [])):
        report.warnings.append("restored rows in delete_scheduled/delete_ongoing are picked up by GitLab's "
                               "deletion worker again: the loop resumes unless the registry was fixed")
    return report
