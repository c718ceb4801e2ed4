"""The metrics with the real parts: Debian's node_exporter serves the textfile on loopback, promtool lints
the exposition and the shipped alerting rules (and runs their unit tests)."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.ops.check import CheckReport
from glcleanup.ops.metrics import render
from tests.data.logs.synth import write_log
from tests.support.net import free_port, stop_process, wait_port

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
PROMTOOL = shutil.which("promtool")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _metrics_file(tmp_path: Path) -> Path:
    log = tmp_path / "registry.log"
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    write_log(log, n_minutes=3, per_second=4, start=now - timedelta(minutes=2))
    target = tmp_path / "textfile" / "glcleanup.prom"
    target.parent.mkdir()
    result = CliRunner().invoke(app, ["check", "--registry-log", str(log), "--prometheus", str(target)])
    assert result.exit_code == 2, result.stdout
    return target


@pytest.mark.skipif(NODE_EXPORTER is None, reason="prometheus-node-exporter missing")
def test_node_exporter_serves_the_textfile(tmp_path: Path) -> None:
    target = _metrics_file(tmp_path)
    port = free_port()
    assert NODE_EXPORTER is not None
    proc = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                             "--collector.textfile", f"--collector.textfile.directory={target.parent}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, timeout=10, proc=proc)  # type: ignore[arg-type]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        stop_process(proc)
        assert proc.stderr is not None
        proc.stderr.close()
    samples = _samples(text)
    assert samples[("node_textfile_scrape_error", ())] == 0
    assert samples[("glcleanup_loop_active", (("path", "user/repo"),))] == 1
    assert samples[("glcleanup_loop_delete_requests_per_minute",
                    (("path", "user/repo"), ("user_agent", "GitLab/17.3.5")))] == 240
    assert samples[("glcleanup_check_state", ())] == 2
    assert samples[("glcleanup_log_bytes", (("source", str(tmp_path / "registry.log")),))] > 0
    assert ("glcleanup_log_seconds_to_full", (("source", str(tmp_path / "registry.log")),)) in samples


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian prometheus) missing")
def test_promtool_accepts_the_metrics(tmp_path: Path) -> None:
    target = _metrics_file(tmp_path)
    assert PROMTOOL is not None
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=target.read_bytes(), capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian prometheus) missing")
def test_promtool_checks_and_tests_the_alerting_rules() -> None:
    assert PROMTOOL is not None
    check = subprocess.run([PROMTOOL, "check", "rules", "glcleanup.rules.yml"], cwd=CONTRIB, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 8 rules found" in check.stdout
    test = subprocess.run([PROMTOOL, "test", "rules", "glcleanup.rules.test.yml"], cwd=CONTRIB, capture_output=True,
                          text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr
    rules = (CONTRIB / "glcleanup.rules.yml").read_text()
    for command in ("glcleanup stop-loop", "glcleanup logs", "glcleanup scan", "glcleanup stub off"):
        assert command in rules


def test_repository_paths_are_capped_and_the_rest_summed() -> None:
    loops = [{"path": f"team/img{i:02d}", "user_agent": "GitLab/17.3.5", "per_minute": float(100 - i),
              "requests": 10, "failures": 10, "active": True, "age_seconds": 1.0} for i in range(15)]
    report = CheckReport(state=2, loops=loops, facets={"logs": True}, timestamp=1.0)
    samples = _samples(render(report, top=10).decode())
    paths = {dict(labels)["path"] for name, labels in samples if name == "glcleanup_loop_delete_requests_per_minute"}
    assert len(paths) == 11
    assert "team/img09" in paths
    assert "team/img10" not in paths
    other = samples[("glcleanup_loop_delete_requests_per_minute", (("path", "_other"), ("user_agent", "_other")))]
    assert other == sum(100 - i for i in range(10, 15))


def test_contrib_units_run_the_check_every_minute() -> None:
    service = (CONTRIB / "glcleanup-check.service").read_text()
    timer = (CONTRIB / "glcleanup-check.timer").read_text()
    cron = (CONTRIB / "glcleanup-check.cron").read_text()
    assert "--prometheus /var/lib/prometheus/node-exporter/glcleanup.prom" in service
    assert "SuccessExitStatus=1 2 3" in service
    assert "OnUnitActiveSec=1min" in timer
    assert [line for line in cron.splitlines() if line.startswith("* * * * * ")]
    if shutil.which("systemd-analyze"):
        proc = subprocess.run(["systemd-analyze", "verify", str(CONTRIB / "glcleanup-check.timer")],
                              capture_output=True, text=True, timeout=60)
        assert "glcleanup-check.timer:" not in proc.stderr, proc.stderr
