"""Every registry log format, from REAL Distribution 2.8 output (tests/data/logs, made by capture.py)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from glcleanup.logs import analysis as logs
from glcleanup.logs import reader as logs_agent
from glcleanup.transport import LocalHost
from tests.data.logs.capture import capture

DATA = Path(__file__).parent / "data" / "logs"
# What capture.py sends: 3x tag DELETE (400), digest DELETE (202), again (404), unknown repo tag (400)
EXPECTED = {("user/repo", "GitLab/17.3.5"): {"400": 3, "202": 1, "404": 1},
            ("nosuch/repo", "GitLab/17.3.5"): {"400": 1}}
FORMATS = ["registry-text.log", "journalctl-cat.log", "registry-json.log", "access.log", "docker-json.log",
           "docker-json-jsonfmt.log", "svlogd-tai64n.current", "svlogd-iso.current"]


def _codes(path: Path) -> dict[tuple[str, str], dict[str, int]]:
    summary = logs_agent.analyze_path(str(path), None)
    out: dict[tuple[str, str], dict[str, int]] = {}
    kinds = {g[3] for g in summary["groups"]}
    for repo, agent, status, kind, count, _first, _last in summary["groups"]:
        if kind == ("access" if "access" in kinds else "app"):
            out.setdefault((repo, agent), {})[str(status)] = count
    return out


@pytest.mark.parametrize("name", FORMATS)
def test_committed_fixture_counts_every_delete_once(name: str) -> None:
    assert _codes(DATA / name) == EXPECTED


@pytest.mark.parametrize("name", FORMATS)
def test_loop_item_has_the_contract_keys(name: str) -> None:
    report = logs.analyze_sources(LocalHost(), [str(DATA / name)], None)
    assert len(report.loops) == 1  # nosuch/repo failed once only: not a loop
    loop = report.loops[0]
    assert set(loop) >= {"path", "requests", "per_minute", "codes", "user_agent", "first_seen", "last_seen"}
    assert loop["path"] == "user/repo"
    assert loop["requests"] == 5
    assert loop["codes"] == {"202": 1, "400": 3, "404": 1}
    assert loop["user_agent"] == "GitLab/17.3.5"
    assert loop["first_seen"].startswith("20")
    assert loop["first_seen"] <= loop["last_seen"]
    assert set(report.sources[0]) >= {"source", "bytes", "growth_bytes_per_hour", "disk_free_bytes",
                                      "hours_to_full"}


def test_delete_disabled_405_is_counted() -> None:
    assert _codes(DATA / "delete-disabled.log") == {("user/repo", "GitLab/17.3.5"): {"405": 5},
                                                    ("nosuch/repo", "GitLab/17.3.5"): {"405": 1}}


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing")
def test_live_capture_from_a_real_registry_parses_the_same(tmp_path: Path) -> None:
    files = capture(tmp_path)
    for name in FORMATS:
        assert _codes(files[name]) == EXPECTED, name
    assert _codes(files["delete-disabled.log"])[("user/repo", "GitLab/17.3.5")] == {"405": 5}
    text = files["registry-text.log"].read_text()
    assert 'err.code="digest invalid"' in text
    assert "http.response.status=400" in text


def test_incident_lines_with_hand_copied_stray_spaces() -> None:
    app, access = (DATA / "incident-writeup.log").read_bytes().splitlines()
    assert b"level-error" in app
    assert b"http. request.method" in app
    assert b"useragent =" in app
    assert logs_agent.parse_delete(app) == ("USER/REPO", "GitLab/17.3.5", 400, "app")
    assert logs_agent.parse_delete(access) == ("USER/REPO", "GitLab/17.3.5", 400, "access")
    when = datetime(2024, 10, 27, 3, 25, 51, tzinfo=UTC).timestamp()
    assert logs_agent.parse_time(app) == pytest.approx(when + 0.852376136)  # +03:00 honoured
    assert logs_agent.parse_time(access) == pytest.approx(when + 0.852512342)  # docker's own time
    report = logs.analyze_sources(LocalHost(), [str(DATA / "incident-writeup.log")], None)
    assert report.loops == []  # one request is evidence, not a loop
    summary = logs_agent.analyze_path(str(DATA / "incident-writeup.log"), None)
    assert summary["groups"][0][:5] == ["USER/REPO", "GitLab/17.3.5", 400, "access", 1]


def test_broken_lines_nul_hole_cut_line_and_garbage() -> None:
    summary = logs_agent.analyze_path(str(DATA / "broken.log"), None)
    assert summary["nul_bytes"] >= 5000
    assert _codes(DATA / "broken.log") == EXPECTED
    windowed = logs.analyze_sources(LocalHost(), [str(DATA / "broken.log")], timedelta(minutes=15))
    assert windowed.loops[0]["codes"] == {"202": 1, "400": 3, "404": 1}


def test_timestamp_forms() -> None:
    base = datetime(2026, 11, 29, 0, 24, 50, tzinfo=UTC).timestamp()
    assert logs_agent.parse_time(b'time="2026-11-29T00:24:50.5Z" level=info') == base + 0.5
    assert logs_agent.parse_time(b'{"level":"info","time":"2026-11-29T01:24:50+01:00"}') == base
    assert logs_agent.parse_time(b"2026-11-29_00:24:50.50000 time=...") == base + 0.5
    assert logs_agent.parse_time(b'1.2.3.4 - - [29/Nov/2026:03:24:50 +0300] "GET /v2/ HTTP/1.1" 200') == base
    tai = "@%016x%08x" % (2**62 + 10 + int(base), 250_000_000)  # noqa: UP031
    assert logs_agent.parse_time(tai.encode() + b" msg") == pytest.approx(base + 0.25)
    assert logs_agent.parse_time(b"no time here") is None


def test_get_and_put_lines_are_not_deletes() -> None:
    text = (DATA / "registry-text.log").read_bytes()
    for line in text.splitlines():
        if b"method=DELETE" not in line:
            assert logs_agent.parse_delete(line) is None


@pytest.mark.parametrize("name", ["registry-json.log", "docker-json-jsonfmt.log", "docker-json.log",
                                  "svlogd-iso.current"])
def test_app_log_alone_when_the_access_log_is_missing(tmp_path: Path, name: str) -> None:
    """Only stderr captured (`2>file`, or the access log disabled): the app lines carry the evidence."""
    lines = (DATA / name).read_text().splitlines()
    only_app = [ln for ln in lines if "HTTP/1.1" not in ln]
    path = tmp_path / name
    path.write_text("\n".join(only_app) + "\n")
    assert _codes(path) == EXPECTED
    assert {g[3] for g in logs_agent.analyze_path(str(path), None)["groups"]} == {"app"}


def test_quoted_user_agent_with_spaces() -> None:
    text = (b'time="2026-11-29T00:24:50Z" level=error msg="response completed with error" '
            b'http.request.method=DELETE http.request.remoteaddr="127.0.0.1:1" '
            b'http.request.uri=/v2/g/r/manifests/latest http.request.useragent="docker/24.0.7 go/go1.20" '
            b"http.response.status=400 vars.name=g/r\n")
    stats = logs_agent.Stats()
    stats.scan(text * 3, 0, len(text) * 3, None)
    assert stats.to_json()[0][:5] == ["g/r", "docker/24.0.7 go/go1.20", 400, "app", 3]
    assert logs_agent.parse_delete(text.strip()) == ("g/r", "docker/24.0.7 go/go1.20", 400, "app")
