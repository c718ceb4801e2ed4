"""`undo`: put back what a stop-loop journal recorded, in one transaction (undo.rb), or say why not."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from glcleanup import validate
from glcleanup.errors import JournalError
from glcleanup.gitlab.rails import runner_from_settings
from glcleanup.gitlab_facts import LOOPING_STATES
from glcleanup.journal.lock import project_lock
from glcleanup.journal.store import ROLLED_BACK, UNDONE, Journal, now_iso
from glcleanup.journal.store import latest_for_undo as _latest
from glcleanup.settings import Settings

_UNDO_KEYS = ("project", "columns", "changes", "rows", "after", "policies", "policies_after")


@dataclass
class UndoReport:
    journal: str
    result: dict[str, Any]
    state: str
    warnings: list[str] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return bool(self.result.get("applied"))

    def to_json(self) -> dict[str, Any]:
        return {"journal": self.journal, "project": self.result.get("project", {}).get("full_path"),
                "restore": self.result.get("restore", []), "applied": self.applied,
                "exact": self.result.get("exact"), "mismatches": self.result.get("mismatches", []),
                "journal_state": self.state, "warnings": self.warnings}


def undo(settings: Settings, journal_path: str | None, apply: bool) -> UndoReport:
    """Dry-run by default; with `apply`, restore the journaled rows in one transaction and mark it undone."""
    journal = Journal.load(journal_path) if journal_path else _latest()
    data = journal.data
    if journal.state == UNDONE:
        raise JournalError(f"{journal.path} was already undone at {data.get('undone_at')}; nothing changed")
    if journal.state == ROLLED_BACK:
        raise JournalError(f"{journal.path}: that run was rolled back and changed nothing; nothing to undo")
    project = validate.project_path(str(data.get("project", {}).get("full_path") or data.get("project_path")))
    host = settings.rails_host or str(data.get("rails_host") or "")
    command = settings.rails_runner if settings.rails_host else str(data.get("rails_runner") or settings.rails_runner)
    runner = runner_from_settings(replace(settings, rails_host=host, rails_runner=command))
    params = {"journal": {k: data[k] for k in _UNDO_KEYS if k in data}, "apply": apply}
    try:
        with project_lock(host, project, "undo"):
            result: dict[str, Any] = runner.run("undo", params)
            if result.get("never_applied"):
                data.update(state=ROLLED_BACK, checked_at=now_iso())
                journal.save()
            elif apply and result.get("applied"):
                data.update(state=UNDONE, undone_at=now_iso(), undo_result={
                    "exact": result.get("exact"), "mismatches": result.get("mismatches")})
                journal.save()
    finally:
        runner.host.close()
    report = UndoReport(str(journal.path), result, journal.state)
    if result.get("never_applied"):
        report.warnings.append("the journaled change was never committed (every row is as journaled): "
                               "nothing to undo; the journal is marked rolled back")
    elif any(e.get("to") in LOOPING_STATES for e in result.get("restore", [])):
        report.warnings.append("restored rows in delete_scheduled/delete_ongoing are picked up by GitLab's "
                               "deletion worker again: the loop resumes unless the registry was fixed")
    return report
