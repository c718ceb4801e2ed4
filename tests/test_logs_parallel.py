"""The disk-speed scan gives the same answer as the plain parse: forked byte ranges, counted chunks.

Small chunks and a tiny parallel threshold make a few-MB file take every path (learning, counting,
declined counts, worker ranges, merging); the baseline is the regex parse alone, in one process.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from glcleanup.logs import reader
from tests.data.logs.synth import write_log

DATA = Path(__file__).parent / "data" / "logs"
ODD = (  # access lines the counting must not miss: stray whitespace, another tag, another size, a digest
    b'{"log":"10.0.0.1 - - [27/Oct/2024:06:30:00 +0300] \\"DELETE  /v2/user/repo/manifests/latest HTTP/1.1\\" '
    b'400 98 \\"\\" \\"GitLab/17.3.5\\"\\n","stream":"stdout","time":"2024-10-27T03:30:00.5Z"}\n',
    b'{"log":"10.0.0.1 - - [27/Oct/2024:06:30:01 +0300] \\"DELETE /v2/user/repo/manifests/v1.2 HTTP/1.1\\" '
    b'400 98 \\"\\" \\"GitLab/17.3.5\\"\\n","stream":"stdout","time":"2024-10-27T03:30:01.5Z"}\n',
    b'{"log":"10.0.0.1 - - [27/Oct/2024:06:30:02 +0300] \\"DELETE /v2/user/repo/manifests/latest HTTP/1.1\\" '
    b'400 99 \\"\\" \\"GitLab/17.3.5\\"\\n","stream":"stdout","time":"2024-10-27T03:30:02.5Z"}\n',
    b'{"log":"10.0.0.1 - - [27/Oct/2024:06:30:03 +0300] \\"DELETE /v2/team/app/manifests/sha256:ab12 HTTP/1.1\\" '
    b'202 0 \\"\\" \\"GitLab/17.3.5\\"\\n","stream":"stdout","time":"2024-10-27T03:30:03.5Z"}\n',
    b'10.0.0.1 - - [27/Oct/2024:06:30:04 +0300] "DELETE\t/v2/user/repo/manifests/latest HTTP/1.1" 400 98 "" '
    b'"GitLab/17.3.5"\n',  # a literal tab, as a hand-edited plain access log may have
)


def _stamped_like(line: bytes, before: bytes) -> bytes:
    """The odd line with its neighbour's time: real logs are in time order, and first/last are by position."""
    iso = re.search(rb'"time":"([^"]+)Z"', before)
    assert iso is not None
    if b'"time":' in line:
        return re.sub(rb'"time":"[^"]+"', iso.group(0), line, count=1)
    moment = datetime.fromisoformat(iso.group(1)[:26].decode()).replace(tzinfo=UTC) + timedelta(hours=3)
    return re.sub(rb"\[[^\]]+\]", moment.strftime("[%d/%b/%Y:%H:%M:%S +0300]").encode(), line, count=1)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "CHUNK", 64 * 1024)
    monkeypatch.setattr(reader, "LEARN_BYTES", 4 * 1024)
    monkeypatch.setattr(reader, "PARALLEL_MIN", 1)


def _summary(path: Path, workers: int, since: float | None = None) -> dict[str, Any]:
    return reader.analyze_path(str(path), since, workers=workers)


def _baseline(path: Path, monkeypatch: pytest.MonkeyPatch, since: float | None = None) -> dict[str, Any]:
    with monkeypatch.context() as m:
        m.setattr(reader, "MAX_KEYS", 0)  # never learns a request text: every chunk is parsed
        return _summary(path, 1, since)


def _groups(summary: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted(tuple(g) for g in summary["groups"])


def _files(tmp_path: Path) -> list[Path]:
    out = []
    for style in ("go1.11", "2.8.2"):
        for access in (True, False):
            path = tmp_path / f"{style}-{'both' if access else 'app'}.log"
            write_log(path, n_minutes=12, per_second=2, normal_per_second=1, style=style, access=access)
            out.append(path)
    mixed = tmp_path / "mixed.log"
    body = bytearray(out[0].read_bytes())
    for i, line in enumerate(ODD):  # spread through the file, each in a different chunk
        at = body.find(b"\n", len(body) * (i + 1) // (len(ODD) + 1)) + 1
        body[at:at] = _stamped_like(line, bytes(body[body.rfind(b"\n", 0, at - 1) + 1:at]))
    mixed.write_bytes(bytes(body))
    out.append(mixed)
    for name in ("docker-json.log", "registry-text.log", "access.log", "registry-json.log", "broken.log"):
        shutil.copy(DATA / name, tmp_path / name)
        out.append(tmp_path / name)
    return out


@pytest.mark.usefixtures("small_chunks")
def test_parallel_counted_scan_equals_the_plain_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for path in _files(tmp_path):
        plain = _baseline(path, monkeypatch)
        for workers in (1, 2, 3):
            fast = _summary(path, workers)
            assert _groups(fast) == _groups(plain), (path.name, workers)
            assert fast["delete_lines"] == plain["delete_lines"], (path.name, workers)
            assert fast["bytes_scanned"] == plain["bytes_scanned"], (path.name, workers)
        window = _summary(path, 2, since=300.0)
        assert _groups(window) == _groups(_baseline(path, monkeypatch, since=300.0)), path.name


@pytest.mark.usefixtures("small_chunks")
def test_counting_really_serves_the_repeated_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "loop.log"
    write_log(path, n_minutes=12, per_second=2, normal_per_second=1, style="2.8.2")
    outcomes: list[bool] = []
    original = reader.Stats._count_known

    def spy(self: reader.Stats, buf: bytes, pos: int, end: int) -> bool:
        outcomes.append(original(self, buf, pos, end))
        return outcomes[-1]

    monkeypatch.setattr(reader.Stats, "_count_known", spy)
    summary = _summary(path, 1)
    assert outcomes.count(True) >= 10  # the chunks after the first are counted, not parsed
    assert _groups(summary)[0][:5] == ("user/repo", "GitLab/17.3.5", 400, "access", 12 * 120)


def test_the_odd_lines_are_parsed_not_counted_away(tmp_path: Path) -> None:
    path = tmp_path / "odd.log"
    path.write_bytes(b"".join(ODD))
    groups = {(g[0], g[2]): g[4] for g in _summary(path, 1)["groups"]}
    assert groups == {("user/repo", 400): 4, ("team/app", 202): 1}


def test_split_points_fall_on_line_starts(tmp_path: Path) -> None:
    path = tmp_path / "lines.log"
    path.write_bytes(b"".join(b"line %d with some text\n" % i for i in range(5000)))
    data = path.read_bytes()
    points = reader.split_points(lambda off, n: data[off:off + n], 0, len(data), 4)
    assert points[0] == 0
    assert points[-1] == len(data)
    assert points == sorted(points)
    assert all(data[p - 1:p] == b"\n" for p in points[1:-1])
