"""The deletion-worker simulation against the real Distribution 2.8 registry, per GitLab version."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from glcleanup.lab import schema, seed
from glcleanup.lab.registry import RegistryProcess, list_tags, push_image
from glcleanup.lab.worker import DeletionWorker
from tests.lab_proxy import ProbeFixingProxy
from tests.support.net import wait_until

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing")


def wait_for(cond: Callable[[], object], timeout: float = 10.0) -> None:
    wait_until(cond, timeout, step=0.02)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path / "reg") as reg:
        yield reg


def make_db(tmp_path: Path, version: str, registry_url: str, api_url: str | None = None) -> tuple[Path, int]:
    """One project `grp/app` with one repository holding two tags; returns (db, repository id)."""
    db = tmp_path / "gitlab.sqlite3"
    schema.create(db, version, api_url or registry_url)
    conn = schema.connect(db)
    try:
        pid = seed.create_project(conn, seed.ensure_group(conn, "grp"), "app")
        rid = seed.create_repository(conn, pid, "")
    finally:
        conn.close()
    push_image(registry_url, "grp/app", "latest")
    push_image(registry_url, "grp/app", "v1")
    return db, rid


def row(db: Path, rid: int) -> sqlite3.Row | None:
    conn = schema.connect(db)
    try:
        result: sqlite3.Row | None = conn.execute("SELECT * FROM container_repositories WHERE id = ?",
                                                  (rid,)).fetchone()
        return result
    finally:
        conn.close()


def schedule(db: Path, rid: int) -> None:
    """What the UI's delete does: status = delete_scheduled."""
    conn = schema.connect(db)
    try:
        conn.execute("UPDATE container_repositories SET status = 0, status_updated_at = ? WHERE id = ?",
                     (schema.now_db(), rid))
    finally:
        conn.close()


def test_17_3_loops_forever_with_digest_invalid(tmp_path: Path, registry: RegistryProcess) -> None:
    db, rid = make_db(tmp_path, "17.3.5", registry.url)
    schedule(db, rid)
    statuses: set[int] = set()
    started: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            r = row(db, rid)
            if r is not None:
                statuses.add(r["status"])
                if r["delete_started_at"]:
                    started.add(r["delete_started_at"])
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with DeletionWorker(db, time_scale=0.05, job_latency=0.02) as worker:
            wait_for(lambda: worker.pass_count >= 12)
    finally:
        stop.set()
        watcher.join()
    assert all(p.outcome == "rescheduled" for p in worker.passes)
    assert worker.passes[0].message == "could not delete tags: latest, v1"
    assert statuses >= {0, 2}                 # cycling delete_scheduled <-> delete_ongoing
    assert len(started) >= 2                  # delete_started_at keeps moving: the loop's signature
    current = row(db, rid)
    assert current is not None
    assert current["status"] == 0
    assert "failed_deletion_count" not in list(current.keys())
    log = registry.log_path.read_text()
    lines = [ln for ln in log.splitlines() if 'err.code="digest invalid"' in ln
             and "http.request.method=DELETE" in ln and "http.request.uri=/v2/grp/app/manifests/latest" in ln]
    assert len(lines) >= 12
    assert all("http.request.useragent=GitLab/17.3.5" in ln for ln in lines)
    assert '"OPTIONS /v2/name/manifests/tag HTTP/1.1" 200 0 "" "GitLab/17.3.5"' in log
    assert sorted(list_tags(registry.url, "grp/app")) == ["latest", "v1"]


def test_17_6_ends_in_delete_failed_after_ten_failures(tmp_path: Path, registry: RegistryProcess) -> None:
    db, rid = make_db(tmp_path, "17.6.0", registry.url)
    schedule(db, rid)
    # 1 GitLab minute = 2 ms; the stale threshold at 3 s, not 60 ms: a loaded host's pass is not reset mid-flight
    with DeletionWorker(db, time_scale=0.002, job_latency=0.01, stale_minutes=1500) as worker:
        wait_for(lambda: (r := row(db, rid)) is not None and r["status"] == 1, timeout=20)
        # the pass that wrote delete_failed is recorded just after its write: count from there
        wait_for(lambda: any(p.outcome == "failed" for p in worker.passes_for(rid)), timeout=5)
        settled = worker.pass_count
        time.sleep(0.3)
        assert worker.pass_count == settled    # nothing picks up delete_failed
    outcomes = [p.outcome for p in worker.passes_for(rid)]
    assert outcomes == ["rescheduled"] * 10 + ["failed"]
    final = row(db, rid)
    assert final is not None
    assert final["failed_deletion_count"] == 10
    assert final["delete_started_at"] is None
    # backoff: each retry waited at least 2^n lab-minutes after the previous failure
    passes = worker.passes_for(rid)
    gaps = [b.started_at - a.finished_at for a, b in itertools.pairwise(passes)]
    assert gaps[5] >= (2 ** 5) * 0.002 * 0.9


def test_17_5_needs_the_feature_flag(tmp_path: Path, registry: RegistryProcess) -> None:
    db, rid = make_db(tmp_path, "17.5.0", registry.url)
    schedule(db, rid)
    with DeletionWorker(db, time_scale=0.002, job_latency=0.01) as worker:
        wait_for(lambda: worker.pass_count >= 14)
        r = row(db, rid)
        assert r is not None
        assert r["status"] in (0, 2)             # flag off: no cap, no backoff
        assert r["failed_deletion_count"] == 0
        conn = schema.connect(db)
        seed.set_feature(conn, "set_delete_failed_container_repository")
        conn.close()
        wait_for(lambda: (r := row(db, rid)) is not None and r["status"] == 1, timeout=20)


def test_probe_404_takes_the_third_party_path_and_really_deletes(tmp_path: Path,
                                                                  registry: RegistryProcess) -> None:
    with ProbeFixingProxy(registry.url) as proxy:
        db, rid = make_db(tmp_path, "17.3.5", registry.url, api_url=proxy.url)
        schedule(db, rid)
        with DeletionWorker(db, time_scale=0.05, job_latency=0.02) as worker:
            wait_for(lambda: row(db, rid) is None)
    first, last = worker.passes_for(rid)[0], worker.passes_for(rid)[-1]
    assert first.delete_path == "third_party"
    assert any(r.startswith("PUT /v2/grp/app/manifests/latest -> 201") for r in first.requests)
    assert any(r.startswith("DELETE /v2/grp/app/manifests/sha256:") and r.endswith("202")
               for r in first.requests)
    assert first.outcome == "rescheduled"      # memoized tags_count: the next pass destroys
    assert last.outcome == "destroyed"
    assert list_tags(registry.url, "grp/app") == []
    assert "OPTIONS /v2/name/manifests/tag" in proxy.requests


def test_registry_url_is_read_on_every_pass(tmp_path: Path, registry: RegistryProcess) -> None:
    with ProbeFixingProxy(registry.url) as proxy:
        db, rid = make_db(tmp_path, "17.3.5", registry.url)
        schedule(db, rid)
        with DeletionWorker(db, time_scale=0.05, job_latency=0.02) as worker:
            wait_for(lambda: worker.pass_count >= 3)
            conn = schema.connect(db)
            schema.set_setting(conn, "registry_api_url", proxy.url)
            conn.close()
            wait_for(lambda: row(db, rid) is None)
    assert worker.passes[0].delete_path == "tag_delete"
    assert worker.passes[-1].outcome == "destroyed"


def test_slow_worker_overwrites_a_naive_fix(tmp_path: Path, registry: RegistryProcess) -> None:
    db, rid = make_db(tmp_path, "17.3.5", registry.url)
    schedule(db, rid)
    with DeletionWorker(db, time_scale=0.05, slots=1, slow=0.6, job_latency=0.02) as worker:
        wait_for(lambda: (r := row(db, rid)) is not None and r["status"] == 2)
        conn = schema.connect(db)
        conn.execute("UPDATE container_repositories SET status = 1, delete_started_at = NULL WHERE id = ?",
                     (rid,))                  # the naive fix, while the job is in flight
        conn.close()
        wait_for(lambda: worker.pass_count >= 1)
        r = row(db, rid)
        assert r is not None
        assert r["status"] in (0, 2)           # the worker's update_columns put it back
        # a destroyed row stays destroyed: nothing is written for a missing id
        wait_for(lambda: (r := row(db, rid)) is not None and r["status"] == 2)
        before = worker.pass_count
        conn = schema.connect(db)
        conn.execute("DELETE FROM container_repositories WHERE id = ?", (rid,))
        conn.close()
        wait_for(lambda: worker.pass_count > before)
    assert worker.passes[-1].outcome == "gone"
    assert row(db, rid) is None


def test_cron_resets_stale_delete_ongoing(tmp_path: Path, registry: RegistryProcess) -> None:
    db, rid = make_db(tmp_path, "17.3.5", registry.url)
    conn = schema.connect(db)
    project = conn.execute("SELECT project_id FROM container_repositories WHERE id = ?", (rid,)).fetchone()[0]
    fresh = seed.create_repository(conn, project, "fresh")
    conn.execute("UPDATE container_repositories SET status = 2, delete_started_at = '2020-01-01 00:00:00.000000' "
                 "WHERE id = ?", (rid,))
    conn.execute("UPDATE container_repositories SET status = 2, delete_started_at = ? WHERE id = ?",
                 (schema.now_db(), fresh))
    worker = DeletionWorker(db, time_scale=0.05)
    worker.cron_tick(conn)
    states = dict(conn.execute("SELECT id, status FROM container_repositories").fetchall())
    conn.close()
    assert states[rid] == 0
    assert states[fresh] == 2
    assert worker.cron_runs == 1


def test_cleanup_policy_loops_on_tag_delete_and_works_through_proxy(tmp_path: Path,
                                                                    registry: RegistryProcess) -> None:
    db, rid = make_db(tmp_path, "17.3.5", registry.url)
    push_image(registry.url, "grp/app", "v2")
    conn = schema.connect(db)
    project = conn.execute("SELECT project_id FROM container_repositories WHERE id = ?", (rid,)).fetchone()[0]
    seed.create_policy(conn, project, enabled=True, keep_n=0, name_regex="v.*")
    conn.execute("UPDATE container_repositories SET expiration_policy_cleanup_status = 1 WHERE id = ?", (rid,))
    conn.close()
    with DeletionWorker(db, time_scale=0.05, job_latency=0.02) as worker:
        wait_for(lambda: len(worker.policy_passes()) >= 4)
        assert all(p.outcome == "cleanup_unfinished" for p in worker.policy_passes())
        assert worker.policy_passes()[0].tags == ["v1", "v2"]        # `latest` is always kept
        assert worker.pass_count == 0                                 # the deletion loop is idle
        with ProbeFixingProxy(registry.url) as proxy:
            conn = schema.connect(db)
            schema.set_setting(conn, "registry_api_url", proxy.url)
            conn.close()
            wait_for(lambda: worker.policy_passes()[-1].outcome == "cleanup_done")
    done = row(db, rid)
    assert done is not None
    assert done["expiration_policy_cleanup_status"] == 0
    assert done["last_cleanup_deleted_tags_count"] == 2
    assert done["status"] is None
    assert list_tags(registry.url, "grp/app") == ["latest"]
    assert "http.request.uri=/v2/grp/app/manifests/v1" in registry.log_path.read_text()
