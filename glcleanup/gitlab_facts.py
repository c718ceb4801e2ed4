"""What GitLab does, per version: the one place glcleanup keeps GitLab's behaviour.

Every fact names the GitLab file it comes from (gitlabhq/gitlabhq). Python reads these directly;
the bundled Ruby scripts receive `for_ruby()` with every runner call (see gitlab/rails.py), so a new
GitLab version means an edit here, not in fourteen files.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

# app/models/container_repository.rb: `enum status: { delete_scheduled: 0, delete_failed: 1, delete_ongoing: 2 }`.
STATUS_VALUES = {"delete_scheduled": 0, "delete_failed": 1, "delete_ongoing": 2}
# The states the deletion worker picks up or writes back (DeleteContainerRepositoryWorker): these loop.
LOOPING_STATES = ("delete_scheduled", "delete_ongoing")
# Where 17.5 (flag) / 17.6+ park a repository after MAX_DELETION_FAILURES (`set_delete_failed_status`).
PARKED_STATE = "delete_failed"
DELETION_STATES = (*LOOPING_STATES, PARKED_STATE)
# Where a retry starts: the state DeleteContainerRepositoryWorker picks up (`pending_destruction`:
# delete_scheduled, and from 17.5 `next_delete_attempt_at` NULL or past). `requeue` writes it back with
# the 17.5 retry columns reset (failed_deletion_count 0, next_delete_attempt_at NULL; the model validates
# the count in 0..MAX_DELETION_FAILURES), as in gitlab-org/gitlab#480653's console recipe.
REQUEUE_STATE = "delete_scheduled"
# `enum expiration_policy_cleanup_status`: cleanup-policy runs in these states are retried by
# ContainerRegistry::CleanupWorker's cleanup path and loop the same way.
CLEANUP_LOOPING_STATES = ("cleanup_scheduled", "cleanup_unfinished", "cleanup_ongoing")

# 17.5 added the cap behind a flag (off by default, gitlab-org/gitlab#480652); 17.6 made it GA (MR !169040).
RETRY_CAP_FLAG = "set_delete_failed_container_repository"
RETRY_CAP_FLAG_FROM = (17, 5)
RETRY_CAP_NATIVE_FROM = (17, 6)
MAX_DELETION_FAILURES = 10  # ContainerRepository::MAX_DELETION_FAILURES (17.5+)
# Migration AddFailedDeletionCountAndNextDeleteAtToContainerRepositories, milestone 17.5.
RETRY_COLUMNS = ("failed_deletion_count", "next_delete_attempt_at")
RETRY_COLUMNS_FROM = (17, 5)
# lib/api/entities/container_registry.rb: `status` joined the REST repository entity in 16.7 (MR !138202);
# before that only GraphQL's `containerRepositories { status }` tells it.
REST_STATUS_FROM = (16, 7)
# config/initializers/1_settings.rb: cleanup_container_registry_worker '*/5 * * * *' (ContainerRegistry::
# CleanupWorker) enqueues the deletion jobs, so a requeued row is picked within one such period.
CLEANUP_CRON_MINUTES = 5


class RetryCap(StrEnum):
    """Whether this GitLab ends a failing deletion, in one vocabulary for every command."""

    NATIVE = "native"  # 17.6+: delete_failed after 10 tries with backoff
    FEATURE_FLAG = "feature_flag"  # 17.5 with the flag on: the same cap
    NONE = "none"  # before 17.5, or 17.5 with the flag off: retries forever
    UNKNOWN = "unknown"  # version unknown, or 17.5 without a way to read the flag


def parse_version(text: str | None) -> tuple[int, int] | None:
    """(major, minor) of a GitLab version string such as `17.3.5-ee`; None if it is not one."""
    match = re.match(r"\s*v?(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def retry_cap(version: str | None, flag_enabled: bool | None = None) -> RetryCap:
    """The cap in effect for `version`; `flag_enabled` is the 17.5 flag's state when known."""
    parsed = parse_version(version)
    if parsed is None:
        return RetryCap.UNKNOWN
    if parsed >= RETRY_CAP_NATIVE_FROM:
        return RetryCap.NATIVE
    if parsed >= RETRY_CAP_FLAG_FROM:
        if flag_enabled is None:
            return RetryCap.UNKNOWN
        return RetryCap.FEATURE_FLAG if flag_enabled else RetryCap.NONE
    return RetryCap.NONE


def loops_forever(cap: str | None) -> bool:
    """A failing deletion never ends under this cap."""
    return cap == RetryCap.NONE


def has_retry_columns(version: str | None) -> bool:
    parsed = parse_version(version)
    return parsed is not None and parsed >= RETRY_COLUMNS_FROM


def rest_has_status(version: str | None) -> bool:
    parsed = parse_version(version)
    return parsed is not None and parsed >= REST_STATUS_FROM


def delete_counts_as_success(status: int) -> bool:
    """lib/container_registry/base_client.rb `delete_if_exists`: `result.success? || result.status == 404`."""
    return 200 <= status < 300 or status == 404


def for_ruby() -> dict[str, Any]:
    """The facts the bundled Ruby scripts need, sent as data with every runner call."""
    return {
        "looping_states": list(LOOPING_STATES),
        "parked_state": PARKED_STATE,
        "deletion_states": list(DELETION_STATES),
        "cleanup_looping_states": list(CLEANUP_LOOPING_STATES),
        "requeue_state": REQUEUE_STATE,
        "retry_columns": list(RETRY_COLUMNS),
        "retry_cap": {"native_from": list(RETRY_CAP_NATIVE_FROM), "flag_from": list(RETRY_CAP_FLAG_FROM),
                      "flag": RETRY_CAP_FLAG},
    }
