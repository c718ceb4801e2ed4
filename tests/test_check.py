"""`glcleanup check`: plugin states and exit codes from real-format logs, bad input, the metrics file."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.logs import analysis as logs
from glcleanup.transport import LocalHost
from tests.data.logs.synth import write_log
from tests.support.net import free_port

DATA = Path(__file__).parent / "data" / "logs"


def _live_log(path: Path, per_second: float, minutes: int = 3, style: str = "go1.11") -> Path:
    """A log whose loop is still going: its last minute is the current one."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    write_log(path, n_minutes=minutes, per_second=per_second, start=now - timedelta(minutes=minutes - 1),
              style=style)
    return path


def _check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["check", *args])
    return result.exit_code, result.stdout


@pytest.mark.parametrize("style", ["go1.11", "2.8.2"])
def test_active_loop_is_critical_and_names_the_command(tmp_path: Path, style: str) -> None:
    log = _live_log(tmp_path / "registry-json.log", per_second=4, style=style)
    code, out = _check("--registry-log", str(log))
    assert code == 2, out
    status, perfdata = out.splitlines()[0].split(" | ")
    assert status.startswith("GLCLEANUP CRITICAL - loop on user/repo at 240 failing DELETE/min from GitLab/17.3.5")
    assert status.endswith("run glcleanup stop-loop --project user/repo")
    assert "delete_rate=240.0;5;60;0" in perfdata.split()


def test_slower_loop_is_a_warning_and_thresholds_move_it(tmp_path: Path) -> None:
    log = _live_log(tmp_path / "registry.log", per_second=0.5)
    code, out = _check("--registry-log", str(log))
    assert code == 1, out
    assert out.startswith("GLCLEANUP WARNING - loop on user/repo at 30 failing DELETE/min")
    code, out = _check("--registry-log", str(log), "--warn-rate", "40", "--crit-rate", "100")
    assert code == 0, out
    code, out = _check("--registry-log", str(log), "--warn-rate", "1", "--crit-rate", "20")
    assert code == 2, out


def test_an_old_capture_shows_an_ended_loop_not_an_alarm(tmp_path: Path) -> None:
    log = tmp_path / "old.log"
    write_log(log, n_minutes=3, per_second=4)  # October 2024
    report = logs.analyze_sources(LocalHost(), [str(log)], timedelta(minutes=15))
    loop = report.loops[0]
    assert loop["active"] is False
    assert loop["age_seconds"] > 3600 * 24 * 365
    code, out = _check("--registry-log", str(log))
    assert code == 0, out
    assert out.startswith("GLCLEANUP OK - no active DELETE loop (one on user/repo ended ")


def test_live_loop_is_active_with_a_small_age(tmp_path: Path) -> None:
    log = _live_log(tmp_path / "live.log", per_second=4)
    loop = logs.analyze_sources(LocalHost(), [str(log)], timedelta(minutes=15)).loops[0]
    assert loop["active"] is True
    assert loop["age_seconds"] < 60


def test_json_output_has_the_verdict_and_the_facts(tmp_path: Path) -> None:
    log = _live_log(tmp_path / "registry.log", per_second=4)
    result = CliRunner().invoke(app, ["check", "--registry-log", str(log), "-o", "json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["state"] == "CRITICAL"
    assert doc["exit_code"] == 2
    assert doc["facets"] == {"logs": True}
    assert doc["loops"][0]["active"] is True
    assert doc["findings"][0] == {"state": "CRITICAL", "facet": "logs", "message": doc["summary"]}


def test_unreadable_log_is_unknown(tmp_path: Path) -> None:
    code, out = _check("--registry-log", str(tmp_path / "missing.log"))
    assert code == 3
    assert out.startswith("GLCLEANUP UNKNOWN - logs: cannot read ")
    assert "missing.log" in out


def test_log_without_registry_lines_is_unknown_not_ok(tmp_path: Path) -> None:
    log = tmp_path / "syslog"
    log.write_text("".join(f"2026-12-01T10:{m:02d}:00Z host sshd[1]: Accepted publickey for root\n"
                           for m in range(30)))
    code, out = _check("--registry-log", str(log))
    assert code == 3, out
    assert out.startswith(f"GLCLEANUP UNKNOWN - logs: no registry lines in {log}")
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert _check("--registry-log", str(empty))[0] == 3


def test_unreachable_api_is_unknown_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GITLAB_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("GITLAB_PRIVATE_TOKEN", "glpat-secret-never-shown")
    code, out = _check()
    assert code == 3, out
    assert out.startswith("GLCLEANUP UNKNOWN - repositories: cannot reach GitLab at http://127.0.0.1:")
    assert "Connection refused" in out
    assert "glpat-secret-never-shown" not in out


def test_unreachable_api_does_not_hide_a_critical_loop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nagios' severity: CRITICAL outranks UNKNOWN, and the unknown facet is still listed."""
    monkeypatch.setenv("GITLAB_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("GITLAB_PRIVATE_TOKEN", "glpat-x")
    log = _live_log(tmp_path / "registry.log", per_second=4)
    code, out = _check("--registry-log", str(log))
    assert code == 2, out
    lines = out.splitlines()
    assert lines[0].startswith("GLCLEANUP CRITICAL - loop on user/repo")
    assert "(+1 more)" in lines[0]
    assert any(line.startswith("repositories: cannot reach GitLab") for line in lines[1:])


def test_nothing_configured_is_unknown() -> None:
    code, out = _check()
    assert code == 3
    assert out.startswith("GLCLEANUP UNKNOWN - nothing to check")


@pytest.mark.parametrize(("args", "message"), [
    (["--warn-rate", "abc"], "--warn-rate must be a number, not 'abc'"),
    (["--crit-hours", "-1"], "--crit-hours must be a finite number >= 0"),
    (["--warn-rate", "100", "--crit-rate", "10"], "--warn-rate 100 is above --crit-rate 10"),
    (["--warn-hours", "1", "--crit-hours", "24"], "--warn-hours 1 is below --crit-hours 24"),
    (["--stuck-minutes", "0"], "--stuck-minutes must be above 0"),
    (["--since", "soon"], "invalid duration 'soon'"),
    (["--source", "db"], "--source must be one of api, rails, all, none"),
])
def test_nonsensical_threshold_is_unknown_with_a_usage_line(tmp_path: Path, args: list[str], message: str) -> None:
    log = _live_log(tmp_path / "registry.log", per_second=4)
    code, out = _check("--registry-log", str(log), "--prometheus", str(tmp_path / "m.prom"), *args)
    assert code == 3, out
    first, second = out.splitlines()
    assert first.startswith("GLCLEANUP UNKNOWN - ")
    assert message in first
    assert second.startswith("usage: glcleanup check ")
    assert not (tmp_path / "m.prom").exists()  # nothing was done


def test_prometheus_file_is_written_and_replaced(tmp_path: Path) -> None:
    log = _live_log(tmp_path / "registry.log", per_second=4)
    target = tmp_path / "glcleanup.prom"
    target.write_text("old\n")
    code, _out = _check("--registry-log", str(log), "--prometheus", str(target))
    assert code == 2
    text = target.read_text()
    assert 'glcleanup_loop_active{path="user/repo"} 1.0' in text
    assert "glcleanup_check_state 2.0" in text
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_prometheus_into_a_missing_directory_is_unknown(tmp_path: Path) -> None:
    log = _live_log(tmp_path / "registry.log", per_second=0.01)
    code, out = _check("--registry-log", str(log), "--prometheus", str(tmp_path / "nodir" / "glcleanup.prom"))
    assert code == 3, out
    assert "GLCLEANUP UNKNOWN - cannot write --prometheus" in out
    assert "No such file or directory" in out


def test_failed_metrics_write_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    """The write fails midway (file size limit, works as root too): old file as it was, no temp left."""
    log = _live_log(tmp_path / "registry.log", per_second=0.01)
    target = tmp_path / "glcleanup.prom"
    target.write_text("# old metrics\nglcleanup_check_state 0\n")
    before = target.stat()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "glcleanup", "check", "--registry-log", str(log),
                           "--prometheus", str(target)], capture_output=True, text=True, env=env,
                          preexec_fn=limit, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "cannot write --prometheus" in proc.stdout
    assert "left as it was" in proc.stdout
    assert target.read_text() == "# old metrics\nglcleanup_check_state 0\n"
    assert target.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glcleanup.prom", "registry.log"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_prometheus_into_a_read_only_directory_is_unknown(tmp_path: Path) -> None:
    log = _live_log(tmp_path / "registry.log", per_second=0.01)
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "glcleanup.prom").write_text("old\n")
    folder.chmod(0o555)
    try:
        code, out = _check("--registry-log", str(log), "--prometheus", str(folder / "glcleanup.prom"))
    finally:
        folder.chmod(0o755)
    assert code == 3, out
    assert (folder / "glcleanup.prom").read_text() == "old\n"


def test_stub_dir_without_a_stub_is_ok(tmp_path: Path) -> None:
    """The real stubctl reads an empty --dir: no stub on, the facet is up."""
    result = CliRunner().invoke(app, ["check", "--stub-dir", str(tmp_path / "stub"), "-o", "json"])
    assert result.exit_code == 0, result.stdout
    doc = json.loads(result.stdout)
    assert doc["facets"] == {"stub": True}
    assert doc["stub"]["state"] == "off"
    assert doc["summary"] == "no glcleanup stub on"


def test_stub_left_on_past_its_end_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `stub status` says about a stub put up with --for 30m, two hours ago (status read faked)."""
    from glcleanup.stub import status as stub_status

    def on_since(host: object, directory: str) -> stub_status.StubStatus:
        now = datetime.now(UTC)
        found = stub_status.StubStatus(directory, state_file=True, running=True,
                                       state={"mode": "respond", "listen": "127.0.0.1:5000"})
        found.values = {"confirmed_since": stub_status.iso(now - timedelta(hours=2)),
                        "confirmed_until": stub_status.iso(now - timedelta(hours=1, minutes=30))}
        return found

    monkeypatch.setattr(stub_status, "read_status", on_since)
    code, out = _check("--stub-dir", "/var/lib/glcleanup-stub", "--prometheus", str(tmp_path / "m.prom"))
    assert code == 1, out
    assert out.startswith("GLCLEANUP WARNING - glcleanup stub (respond) still on past its planned end ")
    assert "run glcleanup stub off --dir /var/lib/glcleanup-stub" in out
    metrics = (tmp_path / "m.prom").read_text()
    assert "glcleanup_stub_on 1.0" in metrics
    assert "glcleanup_stub_overdue 1.0" in metrics
