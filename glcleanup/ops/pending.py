"""Which rows GitLab will still retry against the registry, and when (pending.rb, one read-only boot).

A stub or proxy switched off before the latest `next_delete_attempt_at` (GitLab 17.5+'s backoff) leaves
that retry to hit the real registry again: `stub status` shows these rows when it can reach the runner.
"""

from __future__ import annotations

from typing import Any

from glcleanup.gitlab.rails import runner_from_settings
from glcleanup.settings import Settings


def pending_retries(settings: Settings) -> dict[str, Any]:
    """{"pending": [...], "parked": n, "latest_retry_at": iso|None, ...}; the caller decides it has a runner."""
    runner = runner_from_settings(settings)
    try:
        result: dict[str, Any] = runner.run("pending")
    finally:
        runner.host.close()
    return result
