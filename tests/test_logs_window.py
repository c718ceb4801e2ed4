"""The window: rate at a known loop speed, ends at the newest entry, costs what the window costs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from glcleanup.logs import analysis as logs
from glcleanup.logs import reader as logs_agent
from glcleanup.transport import LocalHost
from tests.data.logs.synth import write_log

START = datetime(2024, 10, 27, 0, 0, tzinfo=UTC)  # years before the wall clock: the window must not care


@pytest.fixture(scope="module")
def two_hours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("win") / "loop-json.log"
    write_log(path, n_minutes=120, per_second=2.0, normal_per_second=1.0, start=START)
    yield path
    path.unlink()


def test_rate_of_a_known_loop(two_hours: Path) -> None:
    report = logs.analyze_sources(LocalHost(), [str(two_hours)], timedelta(minutes=15))
    (loop,) = report.loops
    assert loop["path"] == "user/repo"
    assert loop["user_agent"] == "GitLab/17.3.5"
    assert loop["per_minute"] == pytest.approx(120.0, abs=0.2)
    assert loop["requests"] == 15 * 120 + 1  # both ends of the window are included
    assert loop["codes"] == {"400": 15 * 120 + 1}


def test_window_ends_at_the_newest_entry_not_the_wall_clock(two_hours: Path) -> None:
    report = logs.analyze_sources(LocalHost(), [str(two_hours)], timedelta(minutes=15))
    (loop,) = report.loops
    newest = START + timedelta(minutes=119, seconds=59.5)  # the last loop request
    assert loop["last_seen"] == newest.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert loop["first_seen"] == (newest - timedelta(minutes=15)).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    source = report.sources[0]
    assert source["window_end"].startswith("2024-10-27T01:59:59")
    assert source["growth_bytes_per_hour"] == pytest.approx(two_hours.stat().st_size / 2, rel=0.05)
    assert source["hours_to_full"] == pytest.approx(source["disk_free_bytes"] / source["growth_bytes_per_hour"],
                                                    rel=0.01)


def test_all_reads_everything(two_hours: Path) -> None:
    report = logs.analyze_sources(LocalHost(), [str(two_hours)], None)
    (loop,) = report.loops
    assert loop["requests"] == 120 * 120
    assert loop["per_minute"] == pytest.approx(120.0, abs=0.1)
    assert loop["first_seen"] == "2024-10-27T00:00:00.000Z"


def test_seeking_reads_few_bytes_of_a_big_file(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    write_log(path, target_bytes=400_000_000, per_second=5.0, start=START)
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    path.unlink()  # 400 MB: gone from disk when the descriptor closes, even if the test fails
    try:
        reads: list[int] = []

        def read(offset: int, n: int) -> bytes:
            reads.append(n)
            return os.pread(fd, n, offset)

        summary = logs_agent.analyze(read, size, 15 * 60)  # plain reads, no mmap: every byte is counted
    finally:
        os.close(fd)
    window_bytes = size - summary["offset"]
    assert window_bytes < size / 50  # 15 min of ~11 h
    assert summary["bytes_read"] == sum(reads)
    assert summary["bytes_read"] < window_bytes + 1_000_000  # probes cost well under 1 MB
    groups = [g for g in summary["groups"] if g[3] == "access"]
    assert groups[0][4] == 15 * 60 * 5 + 1


def test_leading_nul_hole_is_skipped_cheaply(tmp_path: Path) -> None:
    """What a non-append writer leaves after `truncate -s 0`: a sparse hole, then new lines."""
    path = tmp_path / "holed.log"
    write_log(path, n_minutes=20, per_second=1.0, start=START)
    body = path.read_bytes()
    with open(path, "wb") as fh:
        fh.truncate(2 * 1024**3)  # a 2 GiB sparse NUL hole (no disk blocks)
        fh.seek(2 * 1024**3)
        fh.write(body)
    summary = logs_agent.analyze_path(str(path), None)
    assert summary["nul_bytes"] == 2 * 1024**3
    assert summary["bytes_read"] < len(body) + 3_000_000
    report = logs.analyze_sources(LocalHost(), [str(path)], timedelta(minutes=10))
    path.unlink()
    assert report.loops[0]["requests"] == 10 * 60 + 1
    assert report.sources[0]["nul_bytes"] == 2 * 1024**3


def test_many_distinct_digests_fold_into_few_groups(tmp_path: Path) -> None:
    """A cleanup burst: 30,000 DELETEs by digest over 3 repositories, each reference different."""
    path = tmp_path / "access.log"
    lines = []
    for i in range(30_000):
        repo = ("a/one", "b/two", "c/three")[i % 3]
        minute, second = divmod(i // 50, 60)
        lines.append(f'10.0.0.1 - - [27/Oct/2024:06:{minute:02d}:{second:02d} +0300] "DELETE /v2/{repo}/manifests/'
                     f'sha256:{i:064x} HTTP/1.1" 202 0 "" "GitLab/17.6.1"\n')
    path.write_text("".join(lines))
    began = time.perf_counter()
    summary = logs_agent.analyze_path(str(path), None)
    assert time.perf_counter() - began < 2.0
    groups = sorted((g[0], g[2], g[4]) for g in summary["groups"])
    assert groups == [("a/one", 202, 10_000), ("b/two", 202, 10_000), ("c/three", 202, 10_000)]
    assert logs.analyze_sources(LocalHost(), [str(path)], None).loops == []  # 202s are not a loop
