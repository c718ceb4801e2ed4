"""`requeue`: parked or backed-off rows back in GitLab's deletion queue, journaled and undoable.

GitLab >= 17.6 parks a repository as delete_failed after 10 failures and offers no way back but the
Rails console (gitlab-org/gitlab#480653); rows in 17.5+'s backoff wait up to 8.5 hours; `stop-loop
--mode failed` parks rows on purpose. Requeueing while the registry would still loop only restarts
the loop, so the probe GitLab itself uses is replayed against --registry-url first (ops/probe.py, as
doctor does): without a verdict that GitLab would now delete by digest (a proxy or the stub is up,
or the registry deletes tags by name), requeue refuses and changes nothing, unless --force.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from glcleanup import validate
from glcleanup.errors import ConnectError, JournalError, RunnerError, UsageError
from glcleanup.gitlab.rails import runner_from_settings
from glcleanup.journal.lock import database_key, project_lock
from glcleanup.journal.store import ensure_writable
from glcleanup.ops import probe
from glcleanup.ops.report import RunnerResult
from glcleanup.ops.stop_loop import _fault, _finish_journal, _JournalSink
from glcleanup.settings import Settings, redact


@dataclass
class RequeueRequest:
    project: str
    repositories: list[int | str] = field(default_factory=list)
    apply: bool = False
    force: bool = False

    def validated(self) -> RequeueRequest:
        """Input checked before anything is contacted (exit 2)."""
        return replace(self, project=validate.project_path(self.project),
                       repositories=sorted({validate.repository_id(r) for r in self.repositories}))

    def params(self) -> dict[str, Any]:
        return {"project": self.project, "repositories": self.repositories, "apply": self.apply}


@dataclass
class RequeueReport(RunnerResult):
    result: dict[str, Any]
    journal: str | None = None
    registry: dict[str, Any] | None = None  # the probe replay (None with --force and no --registry-url)
    refused: str | None = None  # why nothing was done (the registry would still loop)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {"plan": self.plan, "applied": self.applied, "journal": self.journal, "verified": self.verified,
                "project": r.get("project", {}).get("full_path"), "gitlab_version": r.get("gitlab_version"),
                "retry_cap": r.get("retry_cap"), "final": r.get("final", []), "refused": self.refused,
                "registry": self.registry, "warnings": self.warnings}


class _RequeueSink(_JournalSink):
    command = "requeue"


def registry_verdict(settings: Settings, force: bool) -> tuple[dict[str, Any] | None, str | None]:
    """(probe replay, refusal): requeue goes on only when GitLab would no longer loop against the registry."""
    if not settings.registry_url:
        if force:
            return None, None
        raise UsageError("requeue replays GitLab's probe against the registry first: give --registry-url "
                         "(the registry as GitLab calls it), or --force to requeue without that check")
    try:
        verdict = probe.probe(settings.registry_url, settings.registry_verify)
    except ConnectError as exc:
        if force:
            return None, None
        raise ConnectError(f"{exc}; requeue changed nothing (--force skips this check)") from exc
    inconclusive = 401 in (verdict["tag_delete_probe"]["status"], verdict["tag_delete"]["status"])
    if force or not (verdict["loop_risk"] or inconclusive):
        return verdict, None
    why = ("the registry wants a token, so the replay cannot tell whether GitLab would loop"
           if inconclusive else verdict["explanation"])
    return verdict, (f"refused: GitLab would loop again against {settings.registry_url}: {why}. Put "
                     "`glcleanup stub on --mode proxy` in front of it (or fix the registry) first, or pass --force; "
                     "nothing was changed")


def requeue(settings: Settings, request: RequeueRequest) -> RequeueReport:
    """Probe, then plan (and with `apply`, journal and requeue) in one runner boot."""
    request = request.validated()
    verdict, refusal = registry_verdict(settings, request.force)
    if refusal:
        return RequeueReport({"plan": [], "applied": False, "verified": False}, registry=verdict, refused=refusal)
    runner = runner_from_settings(settings)
    host = settings.rails_host or "local"
    meta = {"rails_host": host, "rails_runner": redact(settings.rails_runner, settings.token),
            "project_path": request.project}
    sink = _RequeueSink(meta, request.project)
    try:
        with project_lock(host, request.project, "requeue", key=database_key(runner.host, host)):
            if request.apply:
                ensure_writable()
            try:
                result: dict[str, Any] = runner.run("requeue", request.params(),
                                                    on_event=sink if request.apply else None)
            except (ConnectError, RunnerError, JournalError) as exc:
                raise _fault(exc, sink, request.project) from exc
    finally:
        runner.host.close()
    if sink.journal is not None:
        _finish_journal(sink, result)
    report = RequeueReport(result, journal=sink.path, registry=verdict)
    if request.force and verdict and verdict.get("loop_risk"):
        report.warnings.append("--force: the registry still answers the way that makes GitLab loop; the "
                               "requeued rows will fail again (on 17.6+ until parked after 10 tries)")
    return report
