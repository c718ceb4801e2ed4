"""GitLab's container-repository deletion loop, simulated against a real registry.

Models `ContainerRegistry::DeleteContainerRepositoryWorker` (LimitedCapacity, 2 slots) and the
`ContainerRegistry::CleanupWorker` cron as gitlab-deletion-internals.md §2/§3/§7 describe them:
claim one pending row, talk real HTTP to `registry_api_url` (re-read on every pass, so pointing it at
a stub or proxy takes effect), then destroy the row or reschedule it with an unconditional
overwrite by id, which is exactly how a running worker undoes a naive database fix.

Time runs on an accelerated clock: `time_scale` real seconds stand for one GitLab minute (cron
period, backoff, stale threshold). Timestamps in the database stay wall-clock UTC.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from glcleanup.lab import policy, schema
from glcleanup.lab.registry_client import (
    DUMMY_CONFIG,
    MAX_LIST_SIZE,
    MT_CONFIG,
    MT_MANIFEST,
    PassRecord,
    RegistryCalls,
    TagDeleteError,
)

CRON_MINUTES = 5                 # cleanup_container_registry_worker: */5 * * * *
STALE_DELETE_MINUTES = 30        # ContainerRegistry::CleanupWorker::STALE_DELETE_THRESHOLD
MAX_CAPACITY = 2                 # DeleteContainerRepositoryWorker::MAX_CAPACITY
RETRY_FLAG = "set_delete_failed_container_repository"
WORKER_CLASS = "ContainerRegistry::DeleteContainerRepositoryWorker"
POLICY_WORKER_CLASS = "ContainerExpirationPolicies::CleanupContainerRepositoryWorker"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def retry_cap_active(conn: sqlite3.Connection, version: str) -> bool:
    """17.6+ always; 17.5 only with the feature flag (off by default)."""
    v = schema.version_tuple(version)
    if v >= (17, 6, 0):
        return True
    if v >= (17, 5, 0):
        row = conn.execute("SELECT 1 FROM feature_gates WHERE feature_key = ? AND key = 'boolean' "
                           "AND value = 'true'", (RETRY_FLAG,)).fetchone()
        return row is not None
    return False


class DeletionWorker:
    """`slots` DeleteContainerRepositoryWorker jobs plus the 5-minute CleanupWorker cron, as threads."""

    def __init__(self, db_path: str | Path, time_scale: float = 0.05, slots: int = MAX_CAPACITY,
                 slow: float = 0.0, token: str = "lab-registry-jwt",  # noqa: S107 - a lab JWT stand-in, not a secret
                 request_timeout: float = 10.0,
                 log_path: Path | None = None, job_latency: float = 0.25, policy_slots: int = 1,
                 stale_minutes: float = STALE_DELETE_MINUTES) -> None:
        self.db_path = str(db_path)
        self.time_scale = time_scale
        self.slots = slots
        self.slow = slow
        self.token = token
        self.request_timeout = request_timeout
        self.log_path = log_path
        self.job_latency = job_latency  # Sidekiq enqueue-to-fetch time between re-enqueued jobs
        self.policy_slots = policy_slots  # CleanupContainerRepositoryWorker jobs (0: policies never run)
        # GitLab's 30 minutes; on a very fast lab clock a real pass (tens of ms on a loaded host) could outlast
        # the scaled threshold and be reset mid-flight, which GitLab never does to a healthy pass: such tests
        # lengthen it
        self.stale_minutes = stale_minutes
        self.passes: list[PassRecord] = []
        # Tests only: called with the row id after the registry calls, before the result is written back,
        # to place a write-back after a given moment (as a slow Sidekiq job does) without racing the clock.
        self.before_write_back: Callable[[int], None] | None = None
        self.cron_runs = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> DeletionWorker:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._cron_loop, name="lab-cron", daemon=True)]
        self._threads += [threading.Thread(target=self._slot_loop, name=f"lab-delete-{i}", daemon=True)
                          for i in range(self.slots)]
        self._threads += [threading.Thread(target=self._policy_loop, name=f"lab-policy-{i}", daemon=True)
                          for i in range(self.policy_slots)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def __enter__(self) -> DeletionWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pass_count(self) -> int:
        """Repository-deletion passes (the cleanup-policy loop's are in `policy_passes`)."""
        with self._lock:
            return sum(1 for p in self.passes if p.kind == "delete")

    def policy_passes(self) -> list[PassRecord]:
        with self._lock:
            return [p for p in self.passes if p.kind == "policy"]

    def passes_for(self, repository_id: int) -> list[PassRecord]:
        with self._lock:
            return [p for p in self.passes if p.repository_id == repository_id and p.kind == "delete"]

    def minutes(self, n: float) -> float:
        """GitLab minutes in real seconds on the lab clock."""
        return n * self.time_scale

    # --- the cron (ContainerRegistry::CleanupWorker) ------------------------------------------------
    def _cron_loop(self) -> None:
        conn = schema.connect(self.db_path)
        try:
            while not self._stop.is_set():
                self.cron_tick(conn)
                self._stop.wait(self.minutes(CRON_MINUTES))
        finally:
            conn.close()

    def cron_tick(self, conn: sqlite3.Connection) -> None:
        """Reset stale delete_ongoing rows, then (perform_with_capacity) wake idle slots."""
        threshold = schema.format_ts(_utcnow() - timedelta(seconds=self.minutes(self.stale_minutes)))
        conn.execute("UPDATE container_repositories SET status = 0, delete_started_at = NULL "
                     "WHERE status = 2 AND delete_started_at < ?", (threshold,))
        with self._lock:
            self.cron_runs += 1
        if self.remaining_work_count(conn) > 0 or policy.remaining_work_count(conn) > 0:
            with self._wake:
                self._wake.notify_all()

    # --- the limited-capacity job ---------------------------------------------------------------
    def _slot_loop(self) -> None:
        conn = schema.connect(self.db_path)
        try:
            while not self._stop.is_set():
                if self.remaining_work_count(conn) == 0:
                    with self._wake:           # not re-enqueued: wait for the cron
                        self._wake.wait()
                    continue
                done = self.perform_work(conn)
                # re-enqueued at once; a no-op job (rows inside their backoff window) still costs a fetch
                self._stop.wait(self.job_latency if done else max(self.job_latency, 0.02))
        finally:
            conn.close()

    def _policy_loop(self) -> None:
        conn = schema.connect(self.db_path)
        try:
            while not self._stop.is_set():
                if policy.remaining_work_count(conn) == 0:
                    with self._wake:
                        self._wake.wait()
                    continue
                record = policy.perform_work(self, conn)
                if record is not None:
                    with self._lock:
                        self.passes.append(record)
                    self._log(record)
                self._stop.wait(max(self.job_latency, 0.02))
        finally:
            conn.close()

    def remaining_work_count(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM container_repositories WHERE status = 0 "
                           "LIMIT ?) pending", (self.slots + 1,)).fetchone()
        return int(row[0])

    def claim(self, conn: sqlite3.Connection, version: str) -> sqlite3.Row | None:
        """next_pending_destruction + set_delete_ongoing_status, in one transaction."""
        now = schema.now_db()
        retry_cols = schema.has_retry_columns(version)
        gate = " AND (next_delete_attempt_at IS NULL OR next_delete_attempt_at <= ?)" if retry_cols else ""
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Packages::Destructible#next_pending_destruction: pending_destruction.limit(1)
            # .lock('FOR UPDATE SKIP LOCKED'): a row a script holds locked is stepped around, not waited for.
            row: sqlite3.Row | None = conn.execute(
                f"SELECT * FROM container_repositories WHERE status = 0{gate} LIMIT 1"  # noqa: S608
                + schema.skip_locked(conn), (now,) if retry_cols else ()).fetchone()
            if row is not None:
                extra = ", next_delete_attempt_at = NULL" if retry_cols else ""
                conn.execute(f"UPDATE container_repositories SET status = 2, delete_started_at = ?, "  # noqa: S608
                             f"status_updated_at = ?{extra} WHERE id = ?", (now, now, row["id"]))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return row

    def perform_work(self, conn: sqlite3.Connection) -> PassRecord | None:
        version = schema.setting(conn, "gitlab_version") or "17.3.5"
        row = self.claim(conn, version)
        if row is None:
            return None
        path = self._repository_path(conn, row)
        record = PassRecord(int(row["id"]), path, version, started_at=time.time())
        base = schema.setting(conn, "registry_api_url") or "http://127.0.0.1:5000"
        verify: bool | str = schema.setting(conn, "registry_ca_file") or True
        calls = RegistryCalls(base, version, self.token, record, verify, self.request_timeout, conn)
        try:
            remaining = self.cleanup_tags(calls, path, version)
            failed = remaining != 0
            if failed:
                record.message = record.message or f"tags remaining: {remaining}"
        except (TagDeleteError, requests.RequestException, OSError, ValueError) as exc:
            failed = True
            record.message = str(exc)
        finally:
            calls.close()
        if self.slow > 0:
            self._stop.wait(self.slow)
        if self.before_write_back is not None:
            self.before_write_back(int(row["id"]))
        record.outcome = self._write_result(conn, row, version, failed)
        record.finished_at = time.time()
        with self._lock:
            self.passes.append(record)
        self._log(record)
        return record

    @staticmethod
    def max_list_size(conn: sqlite3.Connection) -> int:
        """container_registry_cleanup_tags_service_max_list_size (0: no limit), default 200."""
        value = schema.setting(conn, "cleanup_tags_service_max_list_size")
        return int(value) if value not in (None, "") else MAX_LIST_SIZE

    # --- Projects::ContainerRepository::CleanupTagsService + DeleteTagsService -----------------
    def cleanup_tags(self, calls: RegistryCalls, path: str, version: str) -> int:
        """Delete every tag; return tags_count as the worker sees it (from the memoized listing)."""
        if calls.supports_gitlab_api():
            calls.record.service = "gitlab"
            tags = calls.gitlab_tags(path)
        else:
            calls.record.service = "third_party"
            tags = calls.v2_tags(path)
        calls.record.tags = tags
        doomed = tags
        if calls.record.service == "third_party":
            # ThirdParty::CleanupTagsService#truncate: at most max_list_size (+ keep_n, 0 here) tags, a random
            # sample, and a truncated run ends :error although it deleted them (the next pass takes the rest).
            limit = self.max_list_size(calls.conn) if calls.conn is not None else MAX_LIST_SIZE
            if limit and len(tags) > limit:
                doomed = random.sample(tags, limit)
                calls.record.truncated = len(tags)
        if doomed:
            self.delete_tags(calls, path, doomed, version)
        if calls.record.truncated:
            raise TagDeleteError(f"truncated: {len(doomed)} of {calls.record.truncated} tags this pass")
        # tags_count reads the manifest memoized during this run (internals §2): with tags it is
        # still non-zero after a successful delete, so the next pass is the one that destroys.
        return len(calls.v2_tags(path)) if calls.record.service == "gitlab" else len(tags)

    def delete_tags(self, calls: RegistryCalls, path: str, tags: list[str], version: str) -> None:
        new_probe = schema.version_tuple(version) >= (16, 6, 0)
        probe = "/v2/name/manifests/tag" if new_probe else "/v2/name/tags/reference/tag"
        if calls.supports_tag_delete(probe):
            calls.record.delete_path = "tag_delete"
            kind = "manifests" if new_probe else "tags/reference"
            deleted = [t for t in tags if calls.delete_ok(f"/v2/{path}/{kind}/{t}")]
            if not deleted:
                raise TagDeleteError(f"could not delete tags: {', '.join(tags)}")
            return
        calls.record.delete_path = "third_party"
        self._third_party_delete(calls, path, tags)

    def _third_party_delete(self, calls: RegistryCalls, path: str, tags: list[str]) -> None:
        """Upload a dummy config, PUT a dummy manifest over every tag, DELETE that one digest."""
        config = DUMMY_CONFIG
        config_digest = calls.upload_blob(path, config)
        # put_tag: Gitlab::Json.pretty_generate(manifest), no "layers" key; json.dumps(indent=2) prints a
        # non-empty object exactly as Ruby's pretty_generate does.
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "size": len(config), "digest": config_digest},
        }, indent=2).encode()
        digests: dict[str, str] = {}
        for tag in tags:
            resp = calls.call("PUT", f"/v2/{path}/manifests/{tag}", data=manifest,
                              headers={"Content-Type": MT_MANIFEST})
            digest = resp.headers.get("Docker-Content-Digest")
            if resp.ok and digest:
                digests[tag] = digest
        if not digests:
            raise TagDeleteError("could not delete tags")
        for digest in sorted(set(digests.values())):
            if not calls.delete_ok(f"/v2/{path}/manifests/{digest}"):
                raise TagDeleteError("could not delete tags")

    # --- the result write ----------------------------------------------------------------------
    def _write_result(self, conn: sqlite3.Connection, row: sqlite3.Row, version: str, failed: bool) -> str:
        """destroy! on success, else set_delete_*_status: update_columns by id, no status check."""
        rid = int(row["id"])
        if not failed:
            cur = conn.execute("DELETE FROM container_repositories WHERE id = ?", (rid,))
            return "destroyed" if cur.rowcount else "gone"
        now = _utcnow()
        if retry_cap_active(conn, version):
            count = int(row["failed_deletion_count"] or 0)
            if count >= schema.MAX_DELETION_FAILURES:
                cur = conn.execute("UPDATE container_repositories SET status = 1, delete_started_at = NULL, "
                                   "status_updated_at = ? WHERE id = ?", (schema.format_ts(now), rid))
                return "failed" if cur.rowcount else "gone"
            backoff = timedelta(seconds=self.minutes(2 ** count))
            cur = conn.execute(
                "UPDATE container_repositories SET status = 0, delete_started_at = NULL, status_updated_at = ?, "
                "failed_deletion_count = ?, next_delete_attempt_at = ? WHERE id = ?",
                (schema.format_ts(now), count + 1, schema.format_ts(now + backoff), rid))
        else:
            cur = conn.execute("UPDATE container_repositories SET status = 0, delete_started_at = NULL, "
                               "status_updated_at = ? WHERE id = ?", (schema.format_ts(now), rid))
        return "rescheduled" if cur.rowcount else "gone"

    @staticmethod
    def _repository_path(conn: sqlite3.Connection, row: sqlite3.Row) -> str:
        route = conn.execute("SELECT path FROM routes WHERE source_type = 'Project' AND source_id = ?",
                             (row["project_id"],)).fetchone()
        project = route["path"] if route else f"project-{row['project_id']}"
        return "/".join(p for p in (project, row["name"]) if p).lower()

    def _log(self, record: PassRecord) -> None:
        """A sidekiq-style JSON line per pass (what an admin would grep in sidekiq/current)."""
        if self.log_path is None:
            return
        details = {k: v for k, v in asdict(record).items() if k != "requests"}
        worker_class = WORKER_CLASS if record.kind == "delete" else POLICY_WORKER_CLASS
        entry = {"time": datetime.fromtimestamp(record.finished_at, UTC).isoformat(), "class": worker_class,
                 "container_repository_id": record.repository_id,
                 f"{record.service or 'third_party'}_cleanup_tags_service": True,
                 "request_count": len(record.requests), **details}
        with self._lock, open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
