"""End to end in the lab: a real loop (simulated GitLab 17.3.5 worker -> real Distribution registry),
found by `glcleanup logs` in the registry's own log and predicted by `glcleanup doctor`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from tests.support.net import wait_until

lab_module = pytest.importorskip("glcleanup.lab.lab")
pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None or shutil.which("ruby") is None,
                                reason="docker-registry or ruby missing")


def _wait(cond: Callable[[], object], timeout: float = 30.0) -> None:
    wait_until(cond, timeout)


def test_lab_loop_is_found_in_the_log_and_predicted_by_doctor(tmp_path: Path) -> None:
    with lab_module.Lab(tmp_path / "lab", version="17.3.5", time_scale=0.05) as lab:
        website = lab.demo.repository("acme/website")
        lab.delete_image("acme/website", website.id)
        _wait(lambda: lab.registry_log.read_text().count('"DELETE /v2/acme/website/manifests/') >= 5)
        env = lab.settings_env()
        runner = CliRunner()
        logs_run = runner.invoke(app, ["logs", str(lab.registry_log), "--since", "15m", "-o", "json"], env=env)
        doctor_run = runner.invoke(app, ["doctor", "-o", "json"], env=env)
    assert logs_run.exit_code == 1, logs_run.output
    loops = json.loads(logs_run.stdout)["loops"]
    loop = next(item for item in loops if item["path"] == "acme/website")
    assert loop["user_agent"] == "GitLab/17.3.5"
    assert set(loop["codes"]) == {"400"}
    assert loop["requests"] >= 5
    assert doctor_run.exit_code == 1, doctor_run.output
    doctor = json.loads(doctor_run.stdout)
    checks = {c["name"]: c for c in doctor["checks"]}
    assert checks["gitlab_api"]["ok"] is True, checks["gitlab_api"]
    assert "17.3.5" in checks["gitlab_api"]["detail"]
    assert checks["rails_runner"]["ok"] is True, checks["rails_runner"]
    assert checks["registry_host"]["ok"] is True
    assert checks["registry_url"]["ok"] is True
    assert doctor["registry"]["loop_risk"] is True
    assert doctor["registry"]["gitlab_version"].startswith("17.3.5")
    assert doctor["registry"]["retry_cap"] == "none"
    assert lab.token not in doctor_run.stdout
