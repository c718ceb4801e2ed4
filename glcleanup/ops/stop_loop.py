"""`stop-loop`: stop a deletion loop in the database, journaled, verified, reversible.

One runner boot does plan, journal, apply and verify (stop_loop.rb), because a real Rails
boot costs 30-90 s and the race with running workers must be watched from inside. Python's
part: validate input first, hold a per-project lock, write the journal the moment its event
arrives (before Ruby changes anything), and say precisely what state a failure left behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from glcleanup import validate
from glcleanup.errors import ConnectError, GlcleanupError, JournalError, RunnerError, UsageError
from glcleanup.gitlab.rails import RailsRunner, runner_from_settings
from glcleanup.journal.lock import project_lock
from glcleanup.journal.store import APPLIED, ROLLED_BACK, Journal, ensure_writable, now_iso
from glcleanup.ops.leftovers import registry_leftovers
from glcleanup.settings import Settings, redact

MODES = ("done", "failed")
DEFAULT_SETTLE = 5.0   # longer than one worker pass against a healthy registry; --settle for slow ones
POLL_SECONDS = 0.05    # a worker's write-back is re-claimed within Sidekiq's fetch latency: look often
MAX_ROUNDS = 6         # verification gives up after settle * MAX_ROUNDS
MAX_SETTLE = 900.0


@dataclass
class StopLoopRequest:
    project: str
    repositories: list[int | str] = field(default_factory=list)  # ints once validated()
    mode: str = "done"
    settle: float = DEFAULT_SETTLE
    disable_cleanup_policy: bool = False
    apply: bool = False

    def validated(self) -> StopLoopRequest:
        """Every input checked before anything runs (exit 2): paths and ids never reach Ruby as code."""
        if self.mode not in MODES:
            raise UsageError(f"--mode must be done or failed, got {self.mode[:20]!r}")
        if not 0 <= self.settle <= MAX_SETTLE:
            raise UsageError(f"--settle must be between 0 and {MAX_SETTLE:.0f} seconds")
        return replace(self, project=validate.project_path(self.project),
                       repositories=sorted({validate.repository_id(r) for r in self.repositories}))

    def params(self) -> dict[str, Any]:
        return {"project": self.project, "repositories": self.repositories, "mode": self.mode,
                "apply": self.apply, "settle": self.settle, "poll": POLL_SECONDS, "max_rounds": MAX_ROUNDS,
                "disable_cleanup_policy": self.disable_cleanup_policy}


@dataclass
class StopLoopReport:
    """The runner's result plus what Python added (journal path, registry leftovers, warnings)."""

    result: dict[str, Any]
    journal: str | None = None
    settle: float = DEFAULT_SETTLE
    left_in_registry: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def plan(self) -> list[dict[str, Any]]:
        return list(self.result.get("plan", []))

    @property
    def applied(self) -> bool:
        return bool(self.result.get("applied"))

    @property
    def verified(self) -> bool:
        return bool(self.result.get("verified"))

    def to_json(self) -> dict[str, Any]:
        r = self.result
        doc: dict[str, Any] = {"plan": self.plan, "applied": self.applied, "journal": self.journal,
                               "verified": self.verified}
        doc.update({"project": r.get("project", {}).get("full_path"), "mode": r.get("mode"),
                    "gitlab_version": r.get("gitlab_version"), "retry_cap": r.get("retry_cap"),
                    "settle_seconds": self.settle, "rounds": r.get("rounds", 0),
                    "reapplied": r.get("reapplied", []), "final": r.get("final", []),
                    "already_failed": r.get("already_failed", []),
                    "cleanup_policies": r.get("cleanup_policies", []),
                    "requeue_hint": r.get("requeue_hint"), "warnings": self.warnings})
        if self.left_in_registry is not None:
            doc["left_in_registry"] = self.left_in_registry
        if r.get("still_looping"):
            doc["still_looping"] = r["still_looping"]
        if r.get("verify_error"):
            doc["verify_error"] = r["verify_error"]
        return doc


class _JournalSink:
    """Receives the script's events: writes the journal before Ruby changes anything."""

    def __init__(self, meta: dict[str, Any], project: str) -> None:
        self.meta = meta
        self.project = project
        self.journal: Journal | None = None
        self.unsaved: str | None = None  # the journal that arrived but could not be written
        self.applied = False

    def __call__(self, event: dict[str, Any]) -> None:
        if "journal" in event:
            journal = Journal.new("stop-loop", self.project, {**self.meta, **event["journal"]})
            try:
                journal.save()
            except JournalError:  # last resort: the rows must not be lost, the CLI prints them
                self.unsaved = json.dumps(journal.data)
                raise
            self.journal = journal
        elif self.journal is not None and ("applied" in event or "reapplied" in event):
            body = event.get("applied") or event.get("reapplied") or {}
            self.applied = True
            self.journal.data["state"] = APPLIED
            self.journal.data.setdefault("applied_at", now_iso())
            self.journal.merge_rows("after", list(body.get("after", [])))
            self.journal.merge_rows("policies_after", list(body.get("policies_after", [])))
            self.journal.save()

    @property
    def path(self) -> str | None:
        return str(self.journal.path) if self.journal else None


def _fault(exc: GlcleanupError, sink: _JournalSink, project: str) -> GlcleanupError:
    """Say which side of the transaction a broken run stopped on (design.md §7.3: all or nothing)."""
    check = f"check with `glcleanup scan --source rails --project {project}`"
    if sink.unsaved:
        state = (f"the journal could not be saved (its content is printed above) and the changes MAY have been "
                 f"committed: {check}")
    elif sink.journal is None:
        state = ("nothing was changed (the script stopped before it journaled any row; it changes nothing "
                 "until its journal line is out, and the GitLab host's Rails log holds a copy of that line)")
    elif sink.applied:
        state = (f"the changes WERE committed; verification did not finish, so a running worker may still "
                 f"write a row back: {check}; journal {sink.path} (`glcleanup undo {sink.path}`)")
    else:
        state = (f"the changes MAY have been committed (the transaction is all or nothing): {check}; "
                 f"journal {sink.path} (`glcleanup undo {sink.path}` puts back whatever was changed)")
    fault = type(exc)(f"{exc} -- {state}")
    if sink.unsaved:
        fault.details = f"the journal that could not be saved:\n{sink.unsaved}"
    return fault


def _run_once(runner: RailsRunner, request: StopLoopRequest, meta: dict[str, Any]) -> StopLoopReport:
    sink = _JournalSink(meta, request.project)
    try:
        result: dict[str, Any] = runner.run("stop_loop", request.params(), on_event=sink if request.apply else None)
    except (ConnectError, RunnerError, JournalError) as exc:
        raise _fault(exc, sink, request.project) from exc
    report = StopLoopReport(result, journal=sink.path, settle=request.settle)
    if sink.journal is not None:
        _finish_journal(sink.journal, result)
    if result.get("rolled_back"):
        raise RunnerError(f"Ruby raised while applying, and the transaction was rolled back; nothing was "
                          f"changed: {result.get('error')} (journal {sink.path} marked rolled back)")
    return report


def _finish_journal(journal: Journal, result: dict[str, Any]) -> None:
    data = journal.data
    if result.get("rolled_back"):
        data.update(state=ROLLED_BACK, error=result.get("error"))
    elif result.get("applied"):
        data["state"] = APPLIED
        journal.merge_rows("after", list(result.get("after", [])))
        journal.merge_rows("policies_after", list(result.get("policies_after", [])))
        data["result"] = {k: result.get(k) for k in ("verified", "rounds", "reapplied", "final", "changed")}
    data["finished_at"] = now_iso()
    journal.save()


def stop_loop(settings: Settings, request: StopLoopRequest,
              confirm: Callable[[StopLoopReport], bool] | None = None) -> StopLoopReport:
    """Plan (and with `apply`, journal, apply and verify) in one runner boot.

    `confirm` is the interactive "yes": it sees the dry-run plan; a yes costs a second boot that
    applies only the rows shown (narrowed by id), so nothing unseen changes.
    """
    request = request.validated()
    runner = runner_from_settings(settings)
    host = settings.rails_host or "local"
    meta = {"rails_host": host, "rails_runner": redact(settings.rails_runner, settings.token),
            "project_path": request.project, "settle": request.settle}
    try:
        with project_lock(host, request.project, "stop-loop"):
            if request.apply or confirm is not None:
                ensure_writable()
            report = _run_once(runner, request, meta)
            if not request.apply and confirm is not None and report.plan and confirm(report):
                ids: list[int | str] = sorted({int(p["id"]) for p in report.plan if p.get("id") is not None})
                narrowed = replace(request, apply=True, repositories=ids or request.repositories)
                report = _run_once(runner, narrowed, meta)
    finally:
        runner.host.close()
    _add_warnings(report, request)
    if report.applied and request.mode == "done":
        removed = [c["path"] for c in report.result.get("changed", []) if c.get("action") == "destroy"]
        report.left_in_registry = registry_leftovers(settings.registry_url, removed)
    return report


def _add_warnings(report: StopLoopReport, request: StopLoopRequest) -> None:
    r = report.result
    if r.get("cleanup_policies") and not request.disable_cleanup_policy:
        report.warnings.append(
            f"{len(r['cleanup_policies'])} cleanup-policy run(s) in {request.project} loop the same way; "
            "add --disable-cleanup-policy to stop them too")
    held = [p["id"] for p in report.plan if p.get("from") == "delete_ongoing" and p.get("action") == "park"]
    if report.applied and report.verified and held:
        report.warnings.append(
            f"repository {', '.join(map(str, held))} was mid-pass in a worker when parked; a pass that outlasts "
            f"--settle ({request.settle:g} s) can still write it back: check again with "
            f"`glcleanup scan --source rails --project {request.project}` in a few minutes")
    if report.applied and not report.verified:
        report.warnings.append(
            "a target row is back in delete_scheduled/delete_ongoing after verification: a worker keeps "
            "writing it back; retry with a longer --settle, or stop Sidekiq (gitlab-ctl stop sidekiq) and retry")
