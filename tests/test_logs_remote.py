"""Over SSH the window is filtered ON the registry host: assert how many bytes came back."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from glcleanup.errors import NotFoundError
from glcleanup.logs import analysis as logs
from glcleanup.logs import remote as logs_remote
from glcleanup.transport import LocalHost, SSHHost, SSHOptions, parse_host
from tests.data.logs.synth import write_log
from tests.support.ssh import AsyncSSHServer, OpenSSHServer

START = datetime(2024, 10, 27, tzinfo=UTC)
TOOLS = ("sh", "tail", "head", "grep", "wc", "df", "cat", "sed", "readlink", "truncate", "uname")


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("remote") / "registry-json.log"
    write_log(path, target_bytes=40_000_000, per_second=3.0, start=START)
    yield path
    path.unlink()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[AsyncSSHServer]:
    server = AsyncSSHServer(tmp_path).start()
    yield server
    server.stop()


def _host(server: AsyncSSHServer | OpenSSHServer) -> SSHHost:
    return SSHHost(parse_host(f"root@127.0.0.1:{server.port}"),
                   SSHOptions(key_file=str(server.key_file), known_hosts=str(server.known_hosts)))


def _no_python_path(tmp_path: Path, with_gzip: bool) -> str:
    """A PATH with the POSIX tools the fallback needs and no python3."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in TOOLS + (("gzip",) if with_gzip else ()):
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(found)
    return str(bindir)


def test_python3_on_the_host_sends_back_only_a_summary(sshd: AsyncSSHServer, big_log: Path) -> None:
    local = logs.analyze_sources(LocalHost(), [str(big_log)], timedelta(minutes=15))
    host = _host(sshd)
    try:
        report = logs.analyze_sources(host, [str(big_log)], timedelta(minutes=15))
        received = host.bytes_received
    finally:
        host.close()
    def timeless(loops: list[dict[str, Any]]) -> list[dict[str, Any]]:  # age_seconds moves with the clock
        return [{k: v for k, v in loop.items() if k != "age_seconds"} for loop in loops]

    assert timeless(report.loops) == timeless(local.loops)
    assert report.loops[0]["requests"] == 15 * 60 * 3 + 1
    assert report.sources[0]["transport"] == "python3"
    assert report.sources[0]["bytes"] == big_log.stat().st_size
    assert received < 32_000, received  # a JSON summary, not the 40 MB log nor its 1 MB window
    assert any(cmd.startswith("sh -c ") and "python3" in cmd for cmd in sshd.commands)
    assert all(str(big_log) not in cmd.split("'")[1] for cmd in sshd.commands if "'" in cmd)  # path is data


def test_posix_fallback_without_python3(tmp_path: Path, big_log: Path) -> None:
    server = AsyncSSHServer(tmp_path, env={"PATH": _no_python_path(tmp_path, with_gzip=False)}).start()
    host = _host(server)
    try:
        report = logs.analyze_sources(host, [str(big_log)], timedelta(minutes=15))
        received = host.bytes_received
    finally:
        host.close()
        server.stop()
    assert report.sources[0]["transport"] == "shell"
    assert report.loops[0]["requests"] == 15 * 60 * 3 + 1
    assert report.loops[0]["per_minute"] == pytest.approx(180.0, abs=0.5)
    window = report.sources[0]["bytes_read"]
    assert received < big_log.stat().st_size / 10, received  # probes + the window's DELETE lines only
    assert received < window + 200_000


@pytest.mark.skipif(not OpenSSHServer.available(), reason="needs root and /usr/sbin/sshd")
def test_real_sshd_both_readers_through_a_login_shell(tmp_path: Path, big_log: Path) -> None:
    server = OpenSSHServer(tmp_path).start()
    host = _host(server)
    try:
        agent = logs_remote.analyze_remote(host, str(big_log), 900.0)
        after_agent = host.bytes_received
        shell = logs_remote.analyze_with_shell(host, str(big_log), 900.0)  # tail/head probes, grep | gzip
        shell_bytes = host.bytes_received - after_agent
    finally:
        host.close()
        server.stop()
    assert agent["transport"] == "python3"
    assert shell["transport"] == "shell"
    assert logs.loops_from("x", agent["groups"]) == logs.loops_from("x", shell["groups"])
    assert logs.loops_from("x", shell["groups"])[0]["requests"] == 15 * 60 * 3 + 1
    assert after_agent < 40_000
    window = big_log.stat().st_size - shell["offset"]
    assert shell_bytes < window / 4, (shell_bytes, window)  # DELETE lines travel gzip-compressed


def test_docker_source_resolved_on_the_registry_host(tmp_path: Path, big_log: Path) -> None:
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    docker = bindir / "docker"
    docker.write_text('#!/bin/sh\n[ "$1 $2 $3" = "inspect --format {{.LogPath}}" ] || exit 9\n'
                      f'[ "$4" = registry ] && {{ echo "{big_log}"; exit 0; }}\n'
                      'echo "Error: No such object: $4" >&2; exit 1\n')
    docker.chmod(0o755)
    server = AsyncSSHServer(tmp_path, env={"PATH": f"{bindir}:{os.environ['PATH']}"}).start()
    host = _host(server)
    try:
        report = logs.analyze_sources(host, ["docker:registry"], timedelta(minutes=5))
        assert report.sources[0]["path"] == str(big_log)
        assert report.loops[0]["requests"] == 5 * 60 * 3 + 1
        with pytest.raises(NotFoundError, match="No such object"):
            logs.analyze_sources(host, ["docker:nosuch"], timedelta(minutes=5))
        with pytest.raises(NotFoundError):
            logs.analyze_sources(host, [str(tmp_path / "missing.log")], timedelta(minutes=5))
    finally:
        host.close()
        server.stop()


def test_a_remote_full_scan_reports_progress_as_it_goes(sshd: AsyncSSHServer, big_log: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs_remote, "PROGRESS_EVERY", 0.0)  # a line per chunk: the 40 MB log has ~20
    seen: list[tuple[str, int, int]] = []
    host = _host(sshd)
    try:
        report = logs.analyze_sources(host, [str(big_log)], None, progress=lambda *a: seen.append(a))
    finally:
        host.close()
    local = logs.analyze_sources(LocalHost(), [str(big_log)], None)
    assert report.loops[0]["requests"] == local.loops[0]["requests"]
    assert report.sources[0]["transport"] == "python3"
    assert len(seen) >= 5, seen
    assert {source for source, _, _ in seen} == {str(big_log)}
    done = [d for _, d, _ in seen]
    assert done == sorted(done)
    assert 0 < done[0] < done[-1] < seen[-1][2]
    assert seen[-1][2] <= big_log.stat().st_size


def test_progress_lines_from_the_host_are_untrusted() -> None:
    calls: list[tuple[int, int]] = []
    sink = logs_remote.ProgressLines(lambda done, total: calls.append((done, total)))
    sink(b'{"progress": [1, 10]}\n{"progr')           # a line split between two chunks
    sink(b'ess": [2, 10]}\n{"progress": [5, 3]}\n')     # done > total: ignored
    sink(b'{"progress": [-1, 10]}\n{"progress": "x"}\n{"progress": [1.5, 10]}\n{"progress": [1, 2, 3]}\n')
    sink(b'{"progress": [3, 10]' + b" " * 500 + b"]}\n")  # an over-long line: ignored
    sink(b"x" * 100_000)                                 # no newline at all: bounded, not kept whole
    assert len(sink.pending) <= 4096
    sink(b'\n{"progress": [4, 10]}\n{"gro')
    assert calls == [(1, 10), (2, 10), (4, 10)]
