"""No false alarms: a loop that ended is shown with its age, never alarmed on; exit codes and words agree.

The analysis marks each loop `active` or not (with `age_seconds`); these tests drive the layer on top:
`logs` and `scan` exit codes, their tables and their one-line verdicts.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app, cmd_logs
from glcleanup.logs import loops as loop_state
from glcleanup.logs.analysis import LogReport
from glcleanup.ops.scan import ScanReport

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def loop(active: bool, age: float, path: str = "acme/platform/api") -> dict[str, Any]:
    last = NOW - timedelta(seconds=age)
    return {"path": path, "requests": 3102, "per_minute": 691.9, "codes": {"400": 3102},
            "user_agent": "GitLab/17.3.5", "first_seen": (last - timedelta(minutes=4)).isoformat(),
            "last_seen": last.isoformat().replace("+00:00", "Z"), "active": active, "age_seconds": age}


SOURCE = {"source": "/var/log/registry.log", "bytes": 10, "growth_bytes_per_hour": None, "disk_free_bytes": None,
          "hours_to_full": None, "window_start": None, "window_end": None}


def test_state_words() -> None:
    assert loop_state.state_text(loop(True, 1)) == "active"
    assert loop_state.state_text(loop(False, 240)) == "ended 4 min ago"
    assert loop_state.ago(7200) == "2.0 h ago"
    assert loop_state.loop_is_active({"path": "x"})  # no state from the analysis: alarm, never a false all-clear


def _logs(monkeypatch: pytest.MonkeyPatch, loops: list[dict[str, Any]]) -> tuple[int, str]:
    monkeypatch.setattr(cmd_logs.logs, "analyze_sources", lambda *_a, **_k: LogReport([dict(SOURCE)], loops))
    result = CliRunner().invoke(app, ["logs", "/var/log/registry.log", "-o", "table"])
    return result.exit_code, result.stdout


def test_logs_an_ended_loop_is_shown_not_alarmed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _logs(monkeypatch, [loop(False, 240)])
    assert code == 0
    assert "ended 4 min ago" in out
    assert "(4 min ago)" in out  # last_seen relative to now
    assert "looping:" not in out
    assert "no active loop: the DELETE loop on acme/platform/api ended 4 min ago" in out


def test_logs_an_active_loop_is_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _logs(monkeypatch, [loop(False, 240, "acme/website"), loop(True, 1)])
    assert code == 1
    assert "looping: 691.9 DELETE/min on acme/platform/api from GitLab/17.3.5" in out
    assert "(+1 more)" not in out  # the ended one is not counted as looping


ROWS = {"none": [], "parked": [{"id": 2, "status": "delete_failed"}],
        "stuck": [{"id": 1, "status": "delete_scheduled"}]}
LOOPS = {"none": [], "ended": [loop(False, 240)], "active": [loop(True, 2)]}


@pytest.mark.parametrize(("rows", "loops"), list(itertools.product(ROWS, LOOPS)))
def test_scan_exit_code_and_words_always_agree(rows: str, loops: str) -> None:
    report = ScanReport(repositories=[dict(r) for r in ROWS[rows]], loops=[dict(x) for x in LOOPS[loops]])
    verdict = report.verdict()
    assert report.in_trouble == (rows == "stuck" or loops == "active")
    assert ("nothing is stuck" in verdict) == (not report.in_trouble), verdict
    if loops == "ended" and rows != "stuck":
        assert "ended" in verdict
    if rows == "parked":
        assert "1 parked (delete_failed)" in verdict
