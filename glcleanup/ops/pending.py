"""Which rows GitLab will still retry against the registry, and when (pending.rb, one read-only boot).

A stub or proxy switched off before the latest `next_delete_attempt_at` (GitLab 17.5+'s backoff) leaves
that retry to hit the real registry again: `stub status` shows these rows when it can reach the runner,
and `stub on --requeue` retries them at once through the stub (`requeue`'s path, journal and undo), so
the admin does not wait up to 8.5 hours of backoff with the stub up.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from glcleanup.errors import GlcleanupError
from glcleanup.gitlab.rails import runner_from_settings
from glcleanup.gitlab_facts import CLEANUP_CRON_MINUTES, REQUEUE_STATE
from glcleanup.ops.requeue import RequeueReport, RequeueRequest, requeue
from glcleanup.settings import Settings
from glcleanup.stub.deploy import hold_until
from glcleanup.transport import Host


def pending_retries(settings: Settings) -> dict[str, Any]:
    """{"pending": [...], "parked": n, "latest_retry_at": iso|None, ...}; the caller decides it has a runner."""
    runner = runner_from_settings(settings)
    try:
        result: dict[str, Any] = runner.run("pending")
    finally:
        runner.host.close()
    return result


def pending_for_stub(settings: Settings, required: bool) -> tuple[dict[str, Any] | None, str | None]:
    """(pending, warning) for `stub on`: the stub is the emergency measure, so a runner that cannot be read
    only warns, unless --requeue needs its answer (then the error stops `stub on` before anything changed)."""
    if not settings.rails_host:
        return None, None
    try:
        return pending_retries(settings), None
    except GlcleanupError as exc:
        if required:
            raise
        return None, f"cannot read GitLab's pending retries ({exc}); going on without them"


def latest_retry_epoch(pending: dict[str, Any] | None) -> int | None:
    """The latest `next_delete_attempt_at` as an epoch second after it (the watcher's not-before mark)."""
    latest = (pending or {}).get("latest_retry_at")
    if not isinstance(latest, str):
        return None
    try:
        moment = datetime.fromisoformat(latest.replace("Z", "+00:00"))
    except ValueError:
        return None  # an answer we cannot read is no reason to hold the stub up for ever
    return int(moment.timestamp()) + 1 if moment.tzinfo else None


def waiting_in_backoff(pending: dict[str, Any]) -> dict[str, list[int]]:
    """Project full path -> ids of the rows GitLab holds back in its retry backoff (what requeue would retry).

    Rows queued without a backoff are retried by GitLab anyway, and delete_ongoing ones are being worked on:
    neither needs a requeue. Parked rows are left to `glcleanup requeue`, which the admin runs by name.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for row in pending.get("pending", []):
        waiting = row.get("next_delete_attempt_at") or int(row.get("failed_deletion_count") or 0) > 0
        if row.get("status") == REQUEUE_STATE and waiting and isinstance(row.get("project"), str):
            groups[row["project"]].append(int(row["id"]))
    return dict(sorted(groups.items()))


def requeue_project(settings: Settings, project: str, ids: list[int]) -> RequeueReport:
    """One project's waiting rows requeued: one boot and one journal, exactly as `glcleanup requeue`.

    requeue itself replays GitLab's probe against --registry-url first, so a stub that does not make
    GitLab delete by digest is caught here too, and the rows stay as they were.
    """
    return requeue(settings, RequeueRequest(project=project, repositories=list(ids), apply=True))


@dataclass
class RetryNow:
    """What `stub on --requeue` did after the stub was verified."""

    reports: list[RequeueReport] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # project -> why its rows stay as they were
    held_until: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and all(r.refused is None and (r.verified or not r.applied) for r in self.reports)

    def to_json(self) -> list[dict[str, Any]]:
        done = [{**r.to_json(), "error": None} for r in self.reports]
        return done + [{"project": project, "applied": False, "error": why} for project, why in self.errors.items()]


def retry_now(settings: Settings, host: Host, directory: str, targets: dict[str, list[int]],
              quiet: bool) -> RetryNow:
    """Requeue the waiting rows through the verified stub; then let --quiet-minutes count from the moment
    GitLab's cron has surely picked them (one CleanupWorker period and a minute), not from hours of backoff.

    A project whose requeue fails keeps its rows, and the watcher keeps the not-before mark `stub on` set.
    """
    done = RetryNow()
    for project, ids in targets.items():
        try:
            done.reports.append(requeue_project(settings, project, ids))
        except GlcleanupError as exc:
            done.errors[project] = str(exc)
    if quiet and done.ok and done.reports:
        done.held_until = int(time.time()) + (CLEANUP_CRON_MINUTES + 1) * 60
        hold_until(host, directory, done.held_until)
    return done
