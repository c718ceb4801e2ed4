"""stop-loop against the running lab, per GitLab version and database: the DELETEs stop within one settle
period of the commit, with one runner boot (the race, narrowing, SSH and policies are in test_stop_loop_lab.py)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from glcleanup.lab import schema, seed
from glcleanup.lab.lab import Lab
from tests.support.running_lab import boots, deletes, status, stop_loop, table, wait_for

pytestmark = [
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing"),
    pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing"),
    pytest.mark.timeout(180),
]
pytest.importorskip("glcleanup.lab.api")
QUIET_CASES = [("17.3.5", "done"), ("17.3.5", "failed"), ("16.6.1", "done"), ("17.5.0", "failed"),
               ("17.5.0+flag", "failed"), ("17.6.0", "failed"), ("18.2.0", "failed")]
SQLITE_QUIET = {("17.3.5", "done"), ("17.3.5", "failed"), ("16.6.1", "done"), ("17.6.0", "failed")}


# Every version on PostgreSQL (GitLab's database); the embedded SQLite on the original four (CI time).
@pytest.mark.parametrize(("version", "mode", "database"),
                         [(v, m, "postgresql") for v, m in QUIET_CASES]
                         + [(v, m, "sqlite") for v, m in QUIET_CASES if (v, m) in SQLITE_QUIET],
                         indirect=["database"])
def test_stop_loop_quiets_the_registry_within_one_settle_period(lab_factory: Callable[..., Lab], version: str,
                                                                mode: str) -> None:
    version, _, flag = version.partition("+")
    lab = lab_factory(version)
    if flag:  # Feature.enable(:set_delete_failed_container_repository): 17.5's retry cap
        conn = schema.connect(lab.database)
        seed.set_feature(conn, "set_delete_failed_container_repository")
        conn.close()
    assert lab.demo is not None
    website = lab.demo.repository("acme/website")
    lab.delete_image("acme/website", website.id)
    wait_for(lambda: len(deletes(lab.registry_log, "acme/website")) >= 4)
    others_before = {k: v for k, v in table(lab).items() if k != website.id}
    settle = 2.0
    started = time.time()
    result = stop_loop(lab, "--project", "acme/website", "--mode", mode, settle=settle)
    finished = time.time()
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["applied"], doc["verified"]) == (True, True)
    assert boots(lab) == 1
    assert finished - started >= settle

    seen = deletes(lab.registry_log, "acme/website")
    time.sleep(1.5)  # the worker keeps running: nothing more may reach the registry for this repository
    assert deletes(lab.registry_log, "acme/website") == seen
    applied = datetime.fromisoformat(json.loads(Path(doc["journal"]).read_text())["applied_at"]).timestamp()
    # Within one settle period of the commit (nothing can stop before it; a slow boot on a loaded host
    # only moves the commit later).
    assert max(seen) <= applied + settle
    print(f"\ntime to the last DELETE ({version}, {mode}, {(lab.database_url and 'postgresql') or 'sqlite'}): "
          f"{max(seen) - started:.3f} s from `stop-loop --yes`, "
          f"{max(seen) - applied:+.3f} s from the commit")

    assert status(lab, website.id) == (None if mode == "done" else schema.STATUS["delete_failed"])
    if mode == "done":
        assert website.id not in table(lab)
        left = doc["left_in_registry"]["repositories"]
        assert [r["path"] for r in left] == ["acme/website"]
        assert {t["tag"] for t in left[0]["tags"]} == {"latest", "2026-11-28"}
        assert all(t["digest"].startswith("sha256:") for t in left[0]["tags"])
    assert {k: v for k, v in table(lab).items() if k != website.id} == others_before
