"""The cleanup-policy loop: `ContainerExpirationPolicies::CleanupContainerRepositoryWorker`, simplified.

Rows waiting for cleanup (`expiration_policy_cleanup_status` scheduled or unfinished) of projects
whose policy is enabled are claimed (`cleanup_ongoing`), their tags filtered by the policy and deleted
through the same tag-delete path as repository deletion. An error leaves the row
`cleanup_unfinished`, which is remaining work, so the job re-enqueues at once: the second loop of
gitlab-deletion-internals.md §2. Not modelled: `older_than`, the next_run_at window, capacity settings.
"""

from __future__ import annotations

import re
import sqlite3
import time
from typing import TYPE_CHECKING

import requests

from glcleanup.lab import schema
from glcleanup.lab.registry_client import PassRecord, RegistryCalls, TagDeleteError

if TYPE_CHECKING:
    from glcleanup.lab.worker import DeletionWorker

SCHEDULED, UNFINISHED, ONGOING, UNSCHEDULED = 1, 2, 3, 0
_WAITING = f"""
FROM container_repositories c JOIN container_expiration_policies p ON p.project_id = c.project_id
WHERE p.enabled AND c.expiration_policy_cleanup_status IN ({SCHEDULED}, {UNFINISHED})"""


def remaining_work_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute(f"SELECT COUNT(*) {_WAITING}").fetchone()[0])


def claim(conn: sqlite3.Connection) -> sqlite3.Row | None:
    """Scheduled rows first, then unfinished ones; mark the row cleanup_ongoing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row: sqlite3.Row | None = conn.execute(
            f"SELECT c.*, p.name_regex, p.name_regex_keep, p.keep_n {_WAITING} "
            "ORDER BY c.expiration_policy_cleanup_status, c.id LIMIT 1").fetchone()
        if row is not None:
            conn.execute("UPDATE container_repositories SET expiration_policy_cleanup_status = ?, "
                         "expiration_policy_started_at = ? WHERE id = ?", (ONGOING, schema.now_db(), row["id"]))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return row


def select_tags(tags: list[str], name_regex: str | None, keep_regex: str | None, keep_n: int | None) -> list[str]:
    """Tags the policy removes: matching name_regex, not keep_regex, never `latest`, minus keep_n."""
    delete = re.compile(name_regex or "")
    keep = re.compile(keep_regex) if keep_regex else None
    candidates = [t for t in sorted(tags) if t != "latest" and delete.fullmatch(t)
                  and not (keep and keep.fullmatch(t))]
    return candidates[: max(len(candidates) - (keep_n or 0), 0)]


def perform_work(worker: DeletionWorker, conn: sqlite3.Connection) -> PassRecord | None:
    version = schema.setting(conn, "gitlab_version") or "17.3.5"
    row = claim(conn)
    if row is None:
        return None
    path = "/".join(p for p in (_project_path(conn, row["project_id"]), row["name"]) if p).lower()
    record = PassRecord(int(row["id"]), path, version, kind="policy", started_at=time.time())
    base = schema.setting(conn, "registry_api_url") or "http://127.0.0.1:5000"
    calls = RegistryCalls(base, version, worker.token, record, schema.setting(conn, "registry_ca_file") or True,
                          worker.request_timeout)
    deleted: list[str] = []
    try:
        calls.record.service = "gitlab" if calls.supports_gitlab_api() else "third_party"
        tags = calls.gitlab_tags(path) if calls.record.service == "gitlab" else calls.v2_tags(path)
        record.tags = select_tags(tags, row["name_regex"], row["name_regex_keep"], row["keep_n"])
        if record.tags:
            worker.delete_tags(calls, path, record.tags, version)
            deleted = record.tags
        failed = False
    except (TagDeleteError, requests.RequestException, OSError, ValueError, re.error) as exc:
        failed, record.message = True, str(exc)
    finally:
        calls.close()
    now = schema.now_db()
    if failed:
        cur = conn.execute("UPDATE container_repositories SET expiration_policy_cleanup_status = ? WHERE id = ?",
                           (UNFINISHED, row["id"]))
    else:
        cur = conn.execute(
            "UPDATE container_repositories SET expiration_policy_cleanup_status = ?, "
            "expiration_policy_completed_at = ?, last_cleanup_deleted_tags_count = ? WHERE id = ?",
            (UNSCHEDULED, now, len(deleted), row["id"]))
    record.outcome = ("cleanup_unfinished" if failed else "cleanup_done") if cur.rowcount else "gone"
    record.finished_at = time.time()
    return record


def _project_path(conn: sqlite3.Connection, project_id: int) -> str:
    route = conn.execute("SELECT path FROM routes WHERE source_type = 'Project' AND source_id = ?",
                         (project_id,)).fetchone()
    return str(route["path"]) if route else f"project-{project_id}"
