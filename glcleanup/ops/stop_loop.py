"""`stop-loop` and `undo`: stop a deletion loop in the database, journaled, verified, reversible.

One runner boot does plan, journal, apply and verify (stop_loop.rb), because a real Rails
boot costs 30-90 s and the race with running workers must be watched from inside. Python's
part: validate input first, hold a per-project lock, write the journal the moment its event
arrives (before Ruby changes anything), and say precisely what state a failure left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import requests

from glcleanup import validate
from glcleanup.errors import ConnectError, GlcleanupError, RunnerError, UsageError
from glcleanup.gitlab.rails import RailsRunner, runner_from_settings
from glcleanup.journal.lock import project_lock
from glcleanup.journal.store import APPLIED, ROLLED_BACK, UNDONE, Journal, JournalError, ensure_writable, now_iso
from glcleanup.journal.store import latest_for_undo as _latest
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
        self.unsaved = False  # the journal line arrived but could not be written
        self.applied = False

    def __call__(self, event: dict[str, Any]) -> None:
        if "journal" in event:
            journal = Journal.new("stop-loop", self.project, {**self.meta, **event["journal"]})
            try:
                journal.save()
            except JournalError as exc:  # last resort: the rows must not be lost
                import json
                import sys

                self.unsaved = True
                sys.stderr.write(f"glcleanup: {exc}; the journal follows:\n{json.dumps(journal.data)}\n")
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
    return type(exc)(f"{exc} -- {state}")


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


# --- what `done` leaves in the registry --------------------------------------------------------------
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
MAX_TAGS = 200
GC_HINT = ("the rows are gone but the images stay in the registry: delete each digest "
           "(DELETE /v2/<path>/manifests/<digest>), then run the registry's garbage collector "
           "(`registry garbage-collect --delete-untagged /etc/docker/registry/config.yml`)")


def registry_leftovers(url: str | None, paths: list[str], timeout: float = 10.0) -> dict[str, Any]:
    """Paths whose rows were removed, with tags and digests when the registry answers without auth."""
    out: dict[str, Any] = {"registry_url": url, "repositories": [{"path": p} for p in paths], "note": GC_HINT}
    if not paths:
        return out
    if not url:
        out["error"] = "no --registry-url: tags and digests not listed"
        return out
    base = url.rstrip("/")
    with requests.Session() as session:
        session.headers["User-Agent"] = "glcleanup (leftover listing)"
        for entry in out["repositories"]:
            try:
                _list_repository(session, base, entry, timeout)
            except requests.RequestException as exc:
                out["error"] = f"registry at {base} unreachable: {type(exc).__name__}"
                break
    return out


def _list_repository(session: requests.Session, base: str, entry: dict[str, Any], timeout: float) -> None:
    resp = session.get(f"{base}/v2/{entry['path']}/tags/list", timeout=timeout)
    if resp.status_code == 401:
        entry["error"] = "the registry needs authentication (401): list with registry credentials"
        return
    if resp.status_code == 404:
        entry["tags"] = []
        return
    if not resp.ok:
        entry["error"] = f"tags/list answered {resp.status_code}"
        return
    try:
        tags = [str(t) for t in (resp.json().get("tags") or [])]
    except (ValueError, AttributeError):
        entry["error"] = "tags/list answered something that is not JSON"
        return
    entry["tags"] = []
    for tag in sorted(tags)[:MAX_TAGS]:
        head = session.head(f"{base}/v2/{entry['path']}/manifests/{tag}", timeout=timeout,
                            headers={"Accept": MANIFEST_ACCEPT})
        entry["tags"].append({"tag": tag, "digest": head.headers.get("Docker-Content-Digest") if head.ok else None})
    if len(tags) > MAX_TAGS:
        entry["truncated"] = len(tags)


# --- undo ----------------------------------------------------------------------------------------------
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
    elif any(e.get("to") in ("delete_scheduled", "delete_ongoing") for e in result.get("restore", [])):
        report.warnings.append("restored rows in delete_scheduled/delete_ongoing are picked up by GitLab's "
                               "deletion worker again: the loop resumes unless the registry was fixed")
    return report
