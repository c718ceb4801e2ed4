"""`glcleanup logs`: the JSON contract, the verdict line and the exit codes (design §5, §6)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from glcleanup.cli import app

DATA = Path(__file__).parent / "data" / "logs"


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["logs", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_contract_and_exit_1_on_a_loop() -> None:
    code, out, _ = _run(str(DATA / "docker-json.log"), "--since", "all", "-o", "json")
    assert code == 1
    document = json.loads(out)
    assert set(document) >= {"sources", "loops"}
    (source,) = document["sources"]
    assert set(source) >= {"source", "bytes", "growth_bytes_per_hour", "disk_free_bytes", "hours_to_full"}
    assert source["bytes"] == (DATA / "docker-json.log").stat().st_size
    (loop,) = document["loops"]
    assert set(loop) >= {"path", "requests", "per_minute", "codes", "user_agent", "first_seen", "last_seen"}
    assert loop["codes"] == {"202": 1, "400": 3, "404": 1}


def test_no_loop_is_exit_0(tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.log"
    quiet.write_text("\n".join(ln for ln in (DATA / "registry-text.log").read_text().splitlines()
                               if "DELETE" not in ln) + "\n")
    code, out, _ = _run(str(quiet), "-o", "table")
    assert code == 0
    assert "no DELETE loop in the window" in out


def test_table_verdict_line() -> None:
    code, out, _ = _run(str(DATA / "svlogd-tai64n.current"), "--since", "all", "-o", "table")
    assert code == 1
    assert "looping: 5.0 DELETE/min on user/repo from GitLab/17.3.5" in out


def test_bad_since_is_a_usage_error() -> None:
    code, _, err = _run(str(DATA / "access.log"), "--since", "yesterday")
    assert code == 2
    assert "invalid duration" in err


def test_missing_file_and_hostile_docker_name() -> None:
    code, _, err = _run("/nonexistent/registry.log")
    assert code == 3
    assert "cannot read /nonexistent/registry.log" in err
    code, _, err = _run("docker:$(reboot)")
    assert code == 2
    assert "invalid container name" in err


def test_docker_source_on_the_local_host(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "abc-json.log"
    shutil.copy2(DATA / "docker-json.log", log)  # keeps the capture's old mtime
    (bindir / "docker").write_text(f'#!/bin/sh\necho "{log}"\n')
    (bindir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    code, out, _ = _run("docker:registry", "--since", "all", "-o", "json")
    assert code == 1
    assert json.loads(out)["sources"][0]["path"] == str(log)
