"""`--truncate` on a log a process keeps writing to: O_APPEND writers stay clean, others leave a NUL
hole, and either way the evidence is saved first and the result is explained."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.logs import analysis as logs
from glcleanup.logs import truncate as logs_disk
from glcleanup.transport import LocalHost
from tests.support.net import stop_process

DATA = Path(__file__).parent / "data" / "logs"
WRITER = r"""
import os, sys, time
path, mode = sys.argv[1], sys.argv[2]
lines = [l for l in open(sys.argv[3], "rb").read().splitlines(keepends=True) if b"DELETE" in l]
if mode == "append":
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)   # docker's json-file logger
else:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)                 # a plain `>` redirect
    os.lseek(fd, 0, os.SEEK_END)
print("ready", flush=True)
while True:
    for line in lines:
        os.write(fd, line)
    time.sleep(0.02)
"""


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(path: Path, mode: str) -> subprocess.Popen[bytes]:
        path.write_bytes((DATA / "docker-json.log").read_bytes() * 200)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), mode, str(DATA / "docker-json.log")],
                                stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.1)
        return proc

    yield start
    for proc in procs:
        stop_process(proc)  # type: ignore[arg-type]


def _relieve(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    host = LocalHost()
    report = logs.analyze_sources(host, [str(path)], None).to_json()
    outcome = logs_disk.relieve(host, report, lambda targets: True)
    return report, outcome


@pytest.mark.parametrize("mode", ["append", "offset"])
def test_truncate_keeps_evidence_and_explains_the_result(writer, tmp_path: Path, mode: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / f"{mode}-json.log"
    proc = writer(path, mode)
    before = path.stat().st_size
    _report, outcome = _relieve(path)
    assert outcome["applied"] is True
    (result,) = outcome["results"]
    (plan,) = outcome["plan"]
    assert [w["pid"] for w in plan["writers"]] == [proc.pid]
    assert plan["writers"][0]["append"] is (mode == "append")
    evidence = json.loads(Path(str(outcome["evidence"])).read_text())
    assert evidence["report"]["loops"][0]["path"] == "user/repo"  # saved before the file was emptied
    assert evidence["report"]["sources"][0]["bytes"] >= before
    head = path.read_bytes()[:4096]
    if mode == "append":
        assert result["nul_fill"] is False
        assert not head.startswith(b"\x00")
        assert "O_APPEND" in result["explanation"]
        assert path.stat().st_size < before
    else:
        assert result["nul_fill"] is True
        assert head.startswith(b"\x00")
        assert f"pid {proc.pid}" in result["explanation"]
        assert "NUL" in result["explanation"]
        assert "freed" in result["explanation"]
        # the reader still finds the loop behind the hole
        again = logs.analyze_sources(LocalHost(), [str(path)], None)
        assert again.sources[0]["nul_bytes"] > 0
        assert again.loops[0]["path"] == "user/repo"


def test_cli_truncate_needs_yes_and_prints_the_log_opts_fix(writer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "registry-json.log"
    writer(path, "append")
    runner = CliRunner()
    size = path.stat().st_size
    plan_only = runner.invoke(app, ["logs", str(path), "--since", "all", "--truncate", "-o", "json"])
    # a loop is in the log, but its lines are two days old while the file is live: ended, not alarmed on
    assert plan_only.exit_code == 0, plan_only.output
    assert json.loads(plan_only.stdout)["loops"][0]["active"] is False
    document = json.loads(plan_only.stdout)
    assert document["truncate"]["applied"] is False
    assert "max-size" in document["truncate"]["log_opts_fix"]
    assert path.stat().st_size >= size  # nothing was emptied
    applied = runner.invoke(app, ["logs", str(path), "--since", "all", "--truncate", "--yes", "-o", "table"])
    assert applied.exit_code == 0, applied.output
    assert "looping:" not in applied.stdout  # an ended loop is shown, not alarmed on
    assert '"max-file": "3"' in applied.stdout
    assert path.stat().st_size < size


def test_truncate_over_ssh_keeps_evidence_locally(writer, tmp_path: Path, isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.ssh import AsyncSSHServer

    path = tmp_path / "remote-json.log"
    proc = writer(path, "append")
    server = AsyncSSHServer(tmp_path).start()
    try:
        result = CliRunner().invoke(app, [
            "logs", str(path), "--since", "all", "--truncate", "--yes", "-o", "json",
            "--registry-host", f"root@127.0.0.1:{server.port}", "--ssh-key", str(server.key_file),
            "--known-hosts", str(server.known_hosts)])
        commands = list(server.commands)
    finally:
        server.stop()
    assert result.exit_code == 0, result.output  # the loop in these old lines ended (a live file)
    outcome = json.loads(result.stdout)["truncate"]
    assert outcome["applied"] is True
    assert outcome["results"][0]["nul_fill"] is False
    assert outcome["plan"][0]["writers"][0]["pid"] == proc.pid
    evidence = Path(outcome["evidence"])
    assert evidence.is_relative_to(isolated_home)  # kept on the admin's side, in glcleanup's state
    assert json.loads(evidence.read_text())["report"]["loops"][0]["path"] == "user/repo"
    assert any(cmd.startswith("truncate -s 0 -- ") for cmd in commands)
