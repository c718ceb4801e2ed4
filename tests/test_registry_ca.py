"""A registry with a private CA: `--registry-ca` (GLCLEANUP_REGISTRY_CA), which the lab exports, is used by
doctor's probe and shown by `config`; before, only an undocumented GITLAB_SSL_VERIFY=<ca> worked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.lab.lab import Lab

pytestmark = [
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing"),
    pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing"),
]


def test_doctor_trusts_the_registry_ca_from_the_labs_exports(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", version="17.3.5", tls=True) as lab:
        env = lab.settings_env()
        result = CliRunner().invoke(app, ["doctor", "-o", "json"], env=env)
        checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
        assert checks["registry_url"]["ok"], checks["registry_url"]
        assert "CERTIFICATE_VERIFY_FAILED" not in result.stdout
        assert json.loads(result.stdout)["registry"]["loop_risk"] is True
        shown = CliRunner().invoke(app, ["config", "-o", "json"], env=env)
        assert json.loads(shown.stdout)["registry_ca"] == env["GLCLEANUP_REGISTRY_CA"]
        without = {k: v for k, v in env.items() if k != "GLCLEANUP_REGISTRY_CA"}
        failing = CliRunner().invoke(app, ["doctor", "-o", "json"], env=without)
        assert failing.exit_code == 1
        assert "CERTIFICATE_VERIFY_FAILED" in failing.stdout


def test_a_missing_registry_ca_file_is_one_line_exit_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["config", "--registry-ca", str(tmp_path / "nope.pem")])
    assert result.exit_code == 3
    missing = tmp_path / "nope.pem"
    assert result.stderr == (f"glcleanup: error: --registry-ca (GLCLEANUP_REGISTRY_CA) {missing}: no such file "
                             "(a PEM CA bundle)\n")
