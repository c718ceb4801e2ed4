"""`doctor` through the bundled nginx stub (respond) and probe-fixing proxy, in front of the real registry.

Skipped unless the stub renderer (glcleanup/stub_render.py), nginx and docker-registry are present.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.lab.registry import RegistryProcess, push_image
from tests.support.net import free_port, stop_process, wait_port

stub_render = pytest.importorskip("glcleanup.stub.render")
pytestmark = pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("docker-registry") is None,
                                reason="nginx or docker-registry missing")


def _nginx(directory: Path, mode: str, upstream: str | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = stub_render.build_config(mode=mode, listen=f"127.0.0.1:{port}", upstream=upstream, dir=str(directory))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(stub_render.render_nginx(config))
    proc = subprocess.Popen(["nginx", "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc=proc)
    return proc, f"http://127.0.0.1:{port}"


def _doctor(url: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(app, ["doctor", "--registry-url", url, "-o", "json"])
    return result.exit_code, json.loads(result.stdout)


def test_proxy_mode_removes_the_loop_risk(tmp_path: Path) -> None:
    with RegistryProcess(tmp_path / "reg") as reg:
        push_image(reg.url, "user/repo", "latest")
        proc, url = _nginx(tmp_path / "proxy", "proxy", reg.url)
        try:
            direct_code, direct = _doctor(reg.url)
            code, doc = _doctor(url)
        finally:
            stop_process(proc)
    assert direct_code == 1
    assert direct["registry"]["loop_risk"] is True  # type: ignore[index]
    assert code == 0
    registry = doc["registry"]
    assert registry["loop_risk"] is False  # type: ignore[index]
    assert registry["tag_delete_probe"]["status"] == 404  # type: ignore[index]
    assert registry["tag_delete"]["status"] == 400  # type: ignore[index]  # still forwarded, never reached by GitLab


def test_respond_mode_says_yes_and_succeeds(tmp_path: Path) -> None:
    proc, url = _nginx(tmp_path / "respond", "respond", None)
    try:
        code, doc = _doctor(url)
    finally:
        stop_process(proc)
    registry = doc["registry"]
    assert code == 0
    assert registry["tag_delete_probe"]["supports_tag_delete"] is True  # type: ignore[index]
    assert registry["tag_delete"]["gitlab_counts_success"] is True  # type: ignore[index]
    assert registry["loop_risk"] is False  # type: ignore[index]
