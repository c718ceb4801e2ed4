"""`glcleanup check` in the lab: CRITICAL while GitLab 17.3.5 loops against the real registry, OK or
WARNING after `stop-loop`, stuck rows from the API, the probe, and the same facts as metrics."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from tests.support.net import wait_until

lab_module = pytest.importorskip("glcleanup.lab.lab")
pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None or shutil.which("ruby") is None,
                                reason="docker-registry or ruby missing")


def _check(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["check", *args], env=env)
    return result.exit_code, result.stdout


def test_check_goes_critical_with_the_loop_and_recovers_after_stop_loop(tmp_path: Path) -> None:
    with lab_module.Lab(tmp_path / "lab", version="17.3.5", time_scale=0.05) as lab:
        env = lab.settings_env()
        log = str(lab.registry_log)
        code, out = _check(env, "--registry-log", log, "--no-probe")
        assert code == 0, out  # the lab is up, nothing deleted yet
        assert out.startswith("GLCLEANUP OK - no active DELETE loop;")
        for path in ("acme/website", "alice/sandbox"):
            lab.delete_image(path, lab.demo.repository(path).id)
        wait_until(lambda: lab.registry_log.read_text().count('"DELETE /v2/alice/sandbox/manifests/') >= 5, 30)
        code, out = _check(env, "--registry-log", log, "--no-probe", "--stuck-minutes", "0.001")
        assert code == 2, out
        assert " and 1 more at " in out.splitlines()[0]
        assert "run glcleanup stop-loop --project " in out.splitlines()[0]
        time.sleep(0.1)  # the first run remembered the rows: now they are stuck longer than 0.06 s
        code, out = _check(env, "--registry-log", log, "--no-probe", "--stuck-minutes", "0.001",
                           "--prometheus", str(tmp_path / "glcleanup.prom"))
        assert code == 2, out
        assert any(line.startswith("2 repositories in delete_scheduled/delete_ongoing for over 0.001 min")
                   for line in out.splitlines()[1:]), out
        metrics = (tmp_path / "glcleanup.prom").read_text()
        assert "glcleanup_repositories_stuck 2.0" in metrics
        assert 'glcleanup_loop_active{path="alice/sandbox"} 1.0' in metrics

        runner = CliRunner()
        done = runner.invoke(app, ["stop-loop", "--project", "acme/website", "--yes", "--settle", "1"], env=env)
        assert done.exit_code == 0, done.output
        failed = runner.invoke(app, ["stop-loop", "--project", "alice/sandbox", "--mode", "failed", "--yes",
                                     "--settle", "1"], env=env)
        assert failed.exit_code == 0, failed.output
        wait_until(lambda: _check(env, "--registry-log", log, "--no-probe")[0] != 2, 30, step=0.5)
        code, out = _check(env, "--registry-log", log, "--no-probe", "-o", "json")
        doc = json.loads(out)
        assert code == 1, out  # the parked row is a warning: the registry still cannot delete it
        assert doc["state"] == "WARNING"
        assert doc["summary"].startswith("1 repositories parked as delete_failed (alice/sandbox in alice/sandbox)")
        assert doc["repositories"]["delete_failed"] == 1
        assert all(not loop["active"] for loop in doc["loops"])
        code, out = _check(env, "--registry-log", log)  # with the probe: the registry is still a loop risk
        assert code == 1
        assert "would loop GitLab's deletes: run glcleanup doctor" in out
        assert "loop_risk=1;0;;0" in out
        assert lab.token not in out
