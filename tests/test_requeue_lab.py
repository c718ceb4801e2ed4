"""requeue against the lab (GitLab 17.6, capped retries) and the real Distribution 2.8.2 registry: rows parked
by GitLab's own cap and by stop-loop, a row in backoff, refusal while the registry would still loop, the
proxy that lets GitLab finish, undo, bad input. One lab for the module; every test has its own project."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from typer.testing import CliRunner, Result

from glcleanup.cli import app
from glcleanup.lab import schema, seed
from glcleanup.lab.lab import Lab
from glcleanup.lab.registry import list_tags, push_image
from glcleanup.stub.deploy import read_status, stub_off
from glcleanup.transport import LocalHost
from tests.lab_proxy import ProbeFixingProxy
from tests.support.net import free_port, wait_until
from tests.support.running_lab import boots, row

pytestmark = [
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing"),
    pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing"),
    pytest.mark.timeout(180),
]
pytest.importorskip("glcleanup.lab.api")

PARKED = schema.STATUS["delete_failed"]
QUEUED = schema.STATUS["delete_scheduled"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    made = Lab(tmp_path_factory.mktemp("requeue-lab") / "lab", version="17.6.0", time_scale=0.2)
    made.up(daemon=False)
    try:
        yield made
    finally:
        made.down()


_counter = iter(range(1, 10_000))


def new_repository(lab: Lab, tags: tuple[str, ...] = ("latest",)) -> tuple[str, int, str]:
    conn = schema.connect(lab.db_path)
    try:
        project = f"rq{next(_counter)}"
        pid = seed.create_project(conn, seed.ensure_group(conn, "acme"), project)
        rid = seed.create_repository(conn, pid)
        path = seed.repository_path(conn, rid)
    finally:
        conn.close()
    for tag in tags:
        push_image(lab.registry_url, path, tag)
    return f"acme/{project}", rid, path


def sql(lab: Lab, statement: str, *args: object) -> None:
    conn = sqlite3.connect(lab.db_path)
    try:
        conn.execute(statement, args)
        conn.commit()
    finally:
        conn.close()


def requeue(lab: Lab, project: str, *extra: str, registry_url: str | None = None) -> Result:
    env = {**lab.settings_env(), **({"GLCLEANUP_REGISTRY_URL": registry_url} if registry_url else {})}
    return CliRunner().invoke(app, ["requeue", "--project", project, "-o", "json", *extra], env=env)


def parked_by_gitlabs_cap(lab: Lab) -> tuple[str, int, str]:
    """GitLab's own end state: the worker's 11th failure (count already 10) sets delete_failed."""
    project, rid, path = new_repository(lab)
    sql(lab, "UPDATE container_repositories SET failed_deletion_count = 10 WHERE id = ?", rid)
    lab.delete_image(project, rid)
    wait_until(lambda: (row(lab, rid) or {}).get("status") == PARKED, 20)
    return project, rid, path


def test_refused_while_the_registry_would_still_loop(lab: Lab) -> None:
    project, rid, _ = parked_by_gitlabs_cap(lab)
    before, booted = row(lab, rid), boots(lab)
    result = requeue(lab, project, "--yes")  # --registry-url is the real Distribution 2.8: DIGEST_INVALID
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["applied"] is False
    assert doc["refused"].startswith("refused: GitLab would loop again")
    assert doc["registry"]["loop_risk"] is True
    assert row(lab, rid) == before
    assert boots(lab) == booted  # refused before any runner boot

    scan = CliRunner().invoke(app, ["scan", "--source", "rails", "--project", project, "-o", "json"],
                              env=lab.settings_env())
    assert [r["way_out"] for r in json.loads(scan.stdout)["repositories"] if r["id"] == rid] == ["requeue_after_proxy"]


def test_requeue_behind_the_proxy_lets_gitlab_finish(lab: Lab) -> None:
    capped = parked_by_gitlabs_cap(lab)
    project, rid, path = capped
    # a second row of the same project, parked by stop-loop instead
    conn = schema.connect(lab.db_path)
    try:
        rid2 = seed.create_repository(conn, int(conn.execute("SELECT project_id FROM container_repositories "
                                                             "WHERE id = ?", (rid,)).fetchone()[0]), "worker")
        path2 = seed.repository_path(conn, rid2)
    finally:
        conn.close()
    push_image(lab.registry_url, path2, "v1")
    lab.delete_image(project, rid2)
    stop = CliRunner().invoke(app, ["stop-loop", "--project", project, "--mode", "failed", "--settle", "1", "--yes",
                                    "-o", "json"], env=lab.settings_env())
    assert stop.exit_code == 0, stop.output
    assert row(lab, rid2)["status"] == PARKED  # type: ignore[index]

    real = lab.registry_api_url()
    with ProbeFixingProxy(real) as proxy:
        lab.set_registry_api_url(proxy.url)  # what `stub on --mode proxy` does for GitLab
        try:
            plan = requeue(lab, project, registry_url=proxy.url)
            assert plan.exit_code == 0, plan.output
            assert {(p["id"], p["reason"]) for p in json.loads(plan.stdout)["plan"]} == {(rid, "parked"),
                                                                                        (rid2, "parked")}
            assert row(lab, rid)["status"] == PARKED  # type: ignore[index]
            booted = boots(lab)
            started = time.monotonic()
            result = requeue(lab, project, "--yes", registry_url=proxy.url)
            assert result.exit_code == 0, result.output
            assert boots(lab) == booted + 1
            doc = json.loads(result.stdout)
            assert doc["applied"] is True
            assert doc["verified"] is True
            assert doc["registry"]["loop_risk"] is False
            journal = json.loads(Path(doc["journal"]).read_text())
            assert journal["command"] == "requeue"
            assert {c["id"] for c in journal["changes"]} == {rid, rid2}
            after = {r["id"]: r for r in journal["after"]}
            assert after[rid]["failed_deletion_count"] == 0
            assert after[rid]["next_delete_attempt_at"] is None
            # GitLab's worker deletes by digest through the proxy, then destroys the rows (1-2 passes each)
            wait_until(lambda: row(lab, rid) is None and row(lab, rid2) is None, 30)
            print(f"\nrequeue behind the proxy: both rows finished by GitLab {time.monotonic() - started:.2f} s "
                  "after `requeue --yes`")
        finally:
            lab.set_registry_api_url(real)
    assert list_tags(lab.registry_url, path) == []
    assert list_tags(lab.registry_url, path2) == []


def test_a_backed_off_row_and_undo_of_a_requeue(lab: Lab) -> None:
    project, rid, _ = new_repository(lab)
    assert lab.worker is not None
    lab.worker.stop()  # like `gitlab-ctl stop sidekiq`: the rows stay exactly as requeue and undo leave them
    try:
        sql(lab, "UPDATE container_repositories SET status = 0, failed_deletion_count = 6, "
                 "next_delete_attempt_at = ?, status_updated_at = ? WHERE id = ?",
            schema.format_ts(schema.parse_ts(schema.now_db()).replace(year=2099)), schema.now_db(), rid)  # type: ignore[union-attr]
        before = row(lab, rid)
        result = requeue(lab, project, "--yes", "--force")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert [(p["id"], p["reason"]) for p in doc["plan"]] == [(rid, "backoff")]
        assert any("--force" in w for w in doc["warnings"])
        now = row(lab, rid)
        assert now is not None
        assert (now["status"], now["failed_deletion_count"], now["next_delete_attempt_at"]) == (QUEUED, 0, None)

        undo = CliRunner().invoke(app, ["undo", doc["journal"], "--yes", "-o", "json"], env=lab.settings_env())
        assert undo.exit_code == 0, undo.output
        assert json.loads(undo.stdout)["exact"] is True
        assert row(lab, rid) == before
    finally:
        lab.worker.start()


@pytest.mark.parametrize(("args", "env"), [
    (["--project", "../etc", "--force"], {}),
    (["--project", "acme/x; rm -rf /", "--force"], {}),
    (["--project", "acme/x", "--repository", "1 OR 1=1", "--force"], {}),
    (["--project", "acme/x"], {"GLCLEANUP_REGISTRY_URL": ""}),  # no registry to replay the probe against
])
def test_bad_input_is_refused_before_anything_runs(lab: Lab, args: list[str], env: dict[str, str]) -> None:
    booted = boots(lab)
    result = CliRunner().invoke(app, ["requeue", *args, "--yes"], env={**lab.settings_env(), **env})
    assert result.exit_code == 2, result.output
    assert boots(lab) == booted


def test_stub_status_shows_the_rows_gitlab_will_still_retry(lab: Lab, tmp_path: Path) -> None:
    _, rid, _ = new_repository(lab)
    retry_at = "2099-01-01 00:00:00.000000"
    sql(lab, "UPDATE container_repositories SET status = 0, failed_deletion_count = 6, next_delete_attempt_at = ?, "
             "status_updated_at = ? WHERE id = ?", retry_at, schema.now_db(), rid)
    booted = boots(lab)
    result = CliRunner().invoke(app, ["stub", "status", "--dir", str(tmp_path / "stub"), "-o", "json"],
                                env=lab.settings_env())
    assert result.exit_code == 0, result.output
    gitlab = json.loads(result.stdout)["gitlab"]
    assert boots(lab) == booted + 1
    mine = [p for p in gitlab["pending"] if p["id"] == rid]
    assert mine[0]["failed_deletion_count"] == 6
    assert mine[0]["next_delete_attempt_at"].startswith("2099-01-01T00:00:00")
    assert gitlab["latest_retry_at"] >= mine[0]["next_delete_attempt_at"]  # other tests' rows may wait longer
    assert gitlab["latest_retry_at"] == max(p["next_delete_attempt_at"] for p in gitlab["pending"]
                                            if p["status"] == "delete_scheduled" and p["next_delete_attempt_at"])
    table = CliRunner().invoke(app, ["stub", "status", "--dir", str(tmp_path / "stub"), "-o", "table"],
                               env=lab.settings_env())
    assert f"latest pending retry at {gitlab['latest_retry_at']}" in table.stderr
    sql(lab, "UPDATE container_repositories SET status = 1 WHERE id = ?", rid)  # out of the other tests' way


# --- the proxy that ends the job: `stub on --mode proxy` with the runner configured --------------------------

@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(d / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    return {"ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}


def in_backoff(lab: Lab, minutes: int = 64) -> tuple[str, int, str, float]:
    """A row as 17.6 leaves it after its 6th failure: queued, but not retried before 2^6 = 64 GitLab minutes."""
    project, rid, path = new_repository(lab, ("latest", "v1"))
    retry_at = time.time() + minutes * lab.time_scale
    sql(lab, "UPDATE container_repositories SET status = 0, failed_deletion_count = 6, next_delete_attempt_at = ?, "
             "status_updated_at = ? WHERE id = ?", schema.format_ts(datetime.fromtimestamp(retry_at, UTC)),
        schema.now_db(), rid)
    return project, rid, path, retry_at


def proxy_on(lab: Lab, tls: dict[str, str], directory: Path, *extra: str) -> tuple[Result, str]:
    """`stub on --mode proxy` in front of the lab's real registry, GitLab pointed at it (as if it took the port)."""
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    lab.set_registry_api_url(url, ca_file=tls["ca"])
    env = {**lab.settings_env(), "GLCLEANUP_REGISTRY_URL": url, "GLCLEANUP_REGISTRY_CA": tls["ca"]}
    result = CliRunner().invoke(app, ["stub", "on", "--mode", "proxy", "--upstream", lab.registry_url,
                                      "--listen", f"127.0.0.1:{port}", "--cert", tls["cert"], "--key", tls["key"],
                                      "--dir", str(directory), "-o", "json", *extra], env=env)
    return result, url


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx missing")
def test_stub_on_requeue_finishes_a_row_in_a_64_minute_backoff(lab: Lab, tls: dict[str, str], tmp_path: Path) -> None:
    project, rid, path, retry_at = in_backoff(lab)
    real = lab.registry_api_url()
    booted = boots(lab)
    try:
        started = time.monotonic()
        result, _ = proxy_on(lab, tls, tmp_path / "stub", "--requeue", "--yes")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["applied"] is True
        assert boots(lab) == booted + 1 + len(doc["requeued"])  # pending.rb, then requeue.rb once per project
        assert [p["project"] for p in doc["gitlab"]["pending"] if p["id"] == rid] == [project]
        mine = [r for r in doc["requeued"] if r["project"] == project]
        assert [p["id"] for p in mine[0]["plan"]] == [rid]
        assert mine[0]["registry"]["loop_risk"] is False      # requeue replayed GitLab's probe through the stub
        journal = json.loads(Path(mine[0]["journal"]).read_text())
        assert (journal["command"], [c["id"] for c in journal["changes"]]) == ("requeue", [rid])
        # GitLab's worker deletes by digest through the proxy, counts it failed (17.6), then destroys the row
        wait_until(lambda: row(lab, rid) is None, 20)
        finished = time.monotonic() - started
        assert time.time() < retry_at, "the row was finished by the old retry, not by the requeue"
        assert list_tags(lab.registry_url, path) == []       # gone from the real registry, not orphaned
        print(f"\nstub on --requeue: row in a 64-minute backoff destroyed {finished:.2f} s after `stub on` began "
              f"(its retry was due {retry_at - time.time():.1f} s later)")
    finally:
        stub_off(LocalHost(), str(tmp_path / "stub"), apply=True)
        lab.set_registry_api_url(real)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx missing")
def test_quiet_watcher_keeps_the_proxy_up_past_gitlabs_pending_retry(lab: Lab, tls: dict[str, str],
                                                                    tmp_path: Path) -> None:
    project, rid, path, retry_at = in_backoff(lab)
    real = lab.registry_api_url()
    host = LocalHost()
    try:
        result, _ = proxy_on(lab, tls, tmp_path / "stub", "--quiet-minutes", "0.1", "--yes")  # 6 s quiet
        assert result.exit_code == 0, result.output
        assert [p["id"] for p in json.loads(result.stdout)["gitlab"]["pending"] if p["id"] == rid] == [rid]
        wait_until(lambda: time.time() >= retry_at - 1, 30)
        assert read_status(host, str(tmp_path / "stub")).to_json()["state"] == "on"   # well past the 6 quiet s
        wait_until(lambda: read_status(host, str(tmp_path / "stub")).to_json().get("last_off"), 40)
        status = read_status(host, str(tmp_path / "stub")).to_json()
        assert (status["state"], status["last_off"]["reason"]) == ("off", "quiet")
        access = (tmp_path / "stub" / "access.log").read_text()
        assert f"DELETE /v2/{path}/manifests/sha256:" in access     # GitLab's retry went through the proxy
        assert time.time() > retry_at
        assert list_tags(lab.registry_url, path) == []
        assert project
    finally:
        stub_off(host, str(tmp_path / "stub"), apply=True)
        lab.set_registry_api_url(real)
