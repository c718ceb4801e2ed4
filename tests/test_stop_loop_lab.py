"""stop-loop against the running lab: the simulated DeleteContainerRepositoryWorker looping on the real
Distribution 2.8 registry, per GitLab version; the race with a slow worker; several repositories; SSH."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.lab import schema
from glcleanup.lab.lab import Lab
from tests.support.running_lab import deletes, status, stop_loop, table, wait_for
from tests.support.ssh import AsyncSSHServer

pytestmark = [
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing"),
    pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing"),
    pytest.mark.timeout(180),
]
pytest.importorskip("glcleanup.lab.api")
@pytest.mark.parametrize("version", ["17.3.5", "17.6.0"])
def test_a_slow_worker_writing_back_after_the_change_is_caught_and_reapplied(lab_factory: Callable[..., Lab],
                                                                              version: str) -> None:
    # time_scale 0.2: stale threshold 6 s, so a 2 s pass is never reset by the cron mid-flight
    lab = lab_factory(version, time_scale=0.2, worker_slow=2.0)
    assert lab.demo is not None
    assert lab.worker is not None
    website = lab.demo.repository("acme/website")

    def after_the_change(rid: int) -> None:  # the slow pass writes back only once stop-loop has committed
        if rid == website.id:
            wait_for(lambda: status(lab, website.id) == schema.STATUS["delete_failed"], timeout=30)

    lab.worker.before_write_back = after_the_change
    lab.delete_image("acme/website", website.id)
    wait_for(lambda: status(lab, website.id) == schema.STATUS["delete_ongoing"])
    started = time.time()
    result = stop_loop(lab, "--project", "acme/website", "--mode", "failed", settle=3.0)
    lab.worker.before_write_back = None
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verified"] is True
    assert doc["rounds"] >= 2
    assert doc["reapplied"], "the worker's write-back was not seen"
    assert doc["reapplied"][0]["rows"][0]["id"] == website.id
    late = [p for p in lab.worker.passes_for(website.id) if p.finished_at > started and p.outcome == "rescheduled"]
    assert late, "no worker pass wrote the row back after stop-loop started"
    seen = deletes(lab.registry_log, "acme/website")
    time.sleep(2.5)
    assert status(lab, website.id) == schema.STATUS["delete_failed"]
    assert deletes(lab.registry_log, "acme/website") == seen
    journal = json.loads(Path(doc["journal"]).read_text())
    assert journal["after"][0]["status"] == schema.STATUS["delete_failed"]
    if version == "17.6.0":
        assert 0 <= journal["after"][0]["failed_deletion_count"] <= schema.MAX_DELETION_FAILURES


def test_only_the_stuck_repository_and_repository_narrowing(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory("17.3.5")
    assert lab.demo is not None
    api = lab.demo.repository("acme/platform/api")
    worker = lab.demo.repository("acme/platform/api/worker")
    lab.delete_image("acme/platform/api", worker.id)
    wait_for(lambda: len(deletes(lab.registry_log, "acme/platform/api/worker")) >= 2)
    result = stop_loop(lab, "--project", "acme/platform/api", "--mode", "failed", settle=1.0)
    assert result.exit_code == 0, result.output
    assert [p["id"] for p in json.loads(result.stdout)["plan"]] == [worker.id]
    assert status(lab, api.id) is None

    # both stuck now; --repository stops only the one named, the other keeps looping
    lab.delete_image("acme/platform/api", api.id)
    conn = schema.connect(lab.database)
    conn.execute("UPDATE container_repositories SET status = 0 WHERE id = ?", (worker.id,))
    conn.close()
    wait_for(lambda: len(deletes(lab.registry_log, "acme/platform/api")) >= 2)
    result = stop_loop(lab, "--project", "acme/platform/api", "--repository", str(worker.id), "--mode", "done",
                       settle=1.0)
    assert result.exit_code == 0, result.output
    assert [p["id"] for p in json.loads(result.stdout)["plan"]] == [worker.id]
    assert worker.id not in table(lab)
    quiet = deletes(lab.registry_log, "acme/platform/api/worker")
    looping = len(deletes(lab.registry_log, "acme/platform/api"))
    time.sleep(1.0)
    assert deletes(lab.registry_log, "acme/platform/api/worker") == quiet
    assert len(deletes(lab.registry_log, "acme/platform/api")) > looping
    assert status(lab, api.id) in (schema.STATUS["delete_scheduled"], schema.STATUS["delete_ongoing"])


def test_stop_loop_through_ssh_into_the_lab(lab_factory: Callable[..., Lab], tmp_path: Path) -> None:
    lab = lab_factory("17.3.5")
    assert lab.demo is not None
    website = lab.demo.repository("acme/website")
    lab.delete_image("acme/website", website.id)
    wait_for(lambda: len(deletes(lab.registry_log, "acme/website")) >= 2)
    server = AsyncSSHServer(tmp_path).start()
    try:
        env = {**lab.settings_env(), "GLCLEANUP_RAILS_HOST": f"root@127.0.0.1:{server.port}",
               "GLCLEANUP_SSH_KEY": str(server.key_file), "GLCLEANUP_KNOWN_HOSTS": str(server.known_hosts)}
        result = CliRunner().invoke(app, ["stop-loop", "--project", "acme/website", "--settle", "1", "--yes",
                                          "-o", "json"], env=env)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["verified"] is True
        runs = [c for c in server.commands if c.startswith(f"{lab.runner_path} runner - ")]
        assert len(runs) == 1  # one boot; the other command reads the machine's identity for the lock
        assert len(server.commands) == 2
        undo = CliRunner().invoke(app, ["undo", "--yes", "-o", "json"], env=env)
        assert undo.exit_code == 0, undo.output
        assert len([c for c in server.commands if c.startswith(f"{lab.runner_path} runner - ")]) == 2
        assert website.id in table(lab)  # back, and the worker picks it up again (the loop resumes)
    finally:
        server.stop()


def test_disable_cleanup_policy_stops_the_policy_loop_too(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory("17.3.5")
    assert lab.demo is not None
    website = lab.demo.repository("acme/website")
    conn = schema.connect(lab.database)  # a policy that removes the dated tag: the same DIGEST_INVALID loop
    conn.execute("UPDATE container_expiration_policies SET keep_n = 0 WHERE project_id = ?",
                 (lab.demo.projects["acme/website"],))
    conn.execute("UPDATE container_repositories SET expiration_policy_cleanup_status = 1 WHERE id = ?", (website.id,))
    conn.close()
    wait_for(lambda: len(deletes(lab.registry_log, "acme/website")) >= 3)
    plain = CliRunner().invoke(app, ["stop-loop", "--project", "acme/website", "-o", "json"], env=lab.settings_env())
    assert plain.exit_code == 0
    assert "--disable-cleanup-policy" in json.loads(plain.stdout)["warnings"][0]

    result = stop_loop(lab, "--project", "acme/website", "--disable-cleanup-policy", settle=1.5)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {p["action"] for p in doc["plan"]} == {"reset_cleanup", "disable_cleanup_policy"}
    assert doc["verified"] is True
    seen = deletes(lab.registry_log, "acme/website")
    time.sleep(1.5)
    assert deletes(lab.registry_log, "acme/website") == seen
    applied = datetime.fromisoformat(json.loads(Path(doc["journal"]).read_text())["applied_at"]).timestamp()
    assert max(seen) <= applied + 1.5  # within one settle period of the commit
    row = table(lab)[website.id]
    assert row["expiration_policy_cleanup_status"] == 0
    assert row["status"] is None
    conn = schema.connect(lab.database)
    enabled = conn.execute("SELECT enabled FROM container_expiration_policies WHERE project_id = ?",
                           (lab.demo.projects["acme/website"],)).fetchone()[0]
    conn.close()
    assert enabled == 0
