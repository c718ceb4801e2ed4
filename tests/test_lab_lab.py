"""The whole lab: in-process for tests, daemons for the CLI; runner wrapper, REST delete, clean stop."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.errors import LabError
from glcleanup.lab import schema
from glcleanup.lab.lab import Lab, pid_matches
from glcleanup.lab.registry import list_tags
from tests.lab_proxy import ProbeFixingProxy
from tests.support.net import wait_until

pytestmark = [
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing"),
    pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing"),
]
api = pytest.importorskip("glcleanup.lab.api")


def wait_for(cond: Callable[[], object], timeout: float = 10.0) -> None:
    wait_until(cond, timeout)


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def runner(lab: Lab, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The lab's bin/gitlab-rails with a bare environment: it must find its database by itself."""
    env = {"PATH": os.environ["PATH"], "HOME": str(lab.dir)}
    return subprocess.run([str(lab.runner_path), "runner", "-", *args], input=code, capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def test_in_process_lab_reproduces_and_resolves_the_loop(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", version="17.3.5", time_scale=0.05) as lab:
        assert lab.demo is not None
        website = lab.demo.repository("acme/website")
        env = lab.settings_env()
        assert env["GITLAB_URL"] == lab.gitlab_url
        assert env["GLCLEANUP_RAILS_HOST"] == "local"
        assert env["GLCLEANUP_RAILS_RUNNER"].endswith("bin/gitlab-rails runner")
        assert env["GLCLEANUP_REGISTRY_URL"] == lab.registry_url
        # the runner through the lab's wrapper, with no environment at all
        proc = runner(lab, "p = Project.find_by_full_path(ARGV[0]); "
                           "puts({path: p.full_path, repos: p.container_repositories.map { |r| r.path.to_s }}.to_json)",
                      "ACME/Website")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("WARNING:")
        assert json.loads(proc.stdout.splitlines()[-1]) == {"path": "acme/website", "repos": ["acme/website"]}
        assert lab.boot_log.read_text().count("\n") == 1

        # the UI's delete: REST DELETE -> delete_scheduled -> the worker loops on DIGEST_INVALID
        assert lab.delete_image("acme/website", website.id) in (200, 202, 204)
        assert lab.worker is not None
        wait_for(lambda: len(lab.worker.passes_for(website.id)) >= 5)  # type: ignore[union-attr]
        log = lab.registry_log.read_text()
        assert "http.request.uri=/v2/acme/website/manifests/latest" in log
        assert 'err.code="digest invalid"' in log
        assert "http.request.useragent=GitLab/17.3.5" in log
        assert {r["status"] for r in lab.repositories() if r["id"] == website.id} <= {
            "delete_scheduled", "delete_ongoing"}

        # repoint GitLab at a probe-fixing proxy: the ThirdParty path deletes for real, the row goes
        with ProbeFixingProxy(lab.registry_url) as proxy:
            lab.set_registry_api_url(proxy.url)
            wait_for(lambda: all(r["id"] != website.id for r in lab.repositories()))
        assert list_tags(lab.registry_url, "acme/website") == []
        ports = [lab.state()["api_port"], lab.state()["registry_port"]]
    assert all(port_closed(p) for p in ports)
    assert lab.status()["state"] == "down"


def test_daemons_stop_cleanly_from_another_process_view(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "lab", version="17.6.0", time_scale=0.05)
    state = lab.up()
    try:
        assert pid_matches(state["gitlab_pid"], "glcleanup.lab.daemon")
        status = Lab(tmp_path / "lab").status()
        assert status["state"] == "up"
        assert status["version"] == "17.6.0"
        assert status["repositories"]["active"] == 5
        with pytest.raises(LabError, match="already up"):
            Lab(tmp_path / "lab", version="17.6.0").up()
        demo = lab.demo
        assert demo is not None
        lab.delete_image("alice/sandbox", demo.repository("alice/sandbox").id)
        wait_for(lambda: "GitLab/17.6.0" in lab.registry_log.read_text())
    finally:
        stopper = Lab.load(tmp_path / "lab")        # a fresh object, like `glcleanup lab down`
        assert stopper.down() is True
    assert not pid_matches(state["gitlab_pid"], "glcleanup.lab.daemon")
    assert not pid_matches(state["registry_pid"], "config.yml")
    assert port_closed(state["api_port"])
    assert port_closed(state["registry_port"])
    assert Lab(tmp_path / "lab").down() is False     # idempotent
    assert Lab(tmp_path / "lab").status()["state"] == "down"
    with pytest.raises(LabError, match=r"holds a GitLab 17\.6\.0 lab"):
        Lab(tmp_path / "lab", version="17.3.5").up()


def test_cli_up_status_delete_down(tmp_path: Path) -> None:
    cli = CliRunner()
    lab_dir = str(tmp_path / "cli-lab")
    result = cli.invoke(app, ["lab", "up", "--dir", lab_dir, "--version", "16.6.1"])
    try:
        assert result.exit_code == 0, result.output
        exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines())
        assert {"GITLAB_URL", "GITLAB_PRIVATE_TOKEN", "GLCLEANUP_RAILS_RUNNER", "GLCLEANUP_REGISTRY_URL"} <= set(
            exports)
        status = cli.invoke(app, ["lab", "status", "--dir", lab_dir, "-o", "json"])
        assert status.exit_code == 0
        doc = json.loads(status.stdout)
        assert doc["state"] == "up"
        assert doc["version"] == "16.6.1"
        conn = schema.connect(Path(lab_dir) / "gitlab.sqlite3")
        rid = conn.execute("SELECT c.id FROM container_repositories c JOIN routes r ON r.source_type = 'Project' "
                           "AND r.source_id = c.project_id WHERE r.path = 'acme/website'").fetchone()[0]
        conn.close()
        deleted = cli.invoke(app, ["lab", "delete-image", "acme/website", str(rid), "--dir", lab_dir])
        assert deleted.exit_code == 0, deleted.output
        bad = cli.invoke(app, ["lab", "delete-image", "../etc", "1", "--dir", lab_dir])
        assert bad.exit_code == 2
    finally:
        down = cli.invoke(app, ["lab", "down", "--dir", lab_dir])
    assert down.exit_code == 0
    after = cli.invoke(app, ["lab", "status", "--dir", lab_dir, "-o", "json"])
    assert after.exit_code == 1
    assert json.loads(after.stdout)["state"] == "down"
    assert cli.invoke(app, ["lab", "down", "--dir", lab_dir, "--purge"]).exit_code == 0
    assert not Path(lab_dir).exists()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")
def test_tls_registry_lab(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", version="17.3.5", tls=True) as lab:
        assert lab.registry_url.startswith("https://127.0.0.1:")
        ca = lab.settings_env()["GLCLEANUP_LAB_REGISTRY_CA"]
        assert sorted(list_tags(lab.registry_url, "acme/website", verify=ca)) == ["2026-11-28", "latest"]
        assert lab.demo is not None
        lab.delete_image("acme/website", lab.demo.repository("acme/website").id)
        worker = lab.worker
        assert worker is not None
        wait_for(lambda: worker.pass_count >= 1)
        assert "http.request.useragent=GitLab/17.3.5" in lab.registry_log.read_text()
        assert worker.passes[0].message.startswith("could not delete tags")  # TLS worked, the bug too
