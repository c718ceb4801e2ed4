"""Hostile class "logs": a reader's time is proportional to its input, whatever the input (issue 13 §4).

A line or NUL region longer than the reader's 16 MiB chunk without a newline used to advance the scan
one byte per search (never ending); now it is skipped in one find and counted, on both paths (mmap and
positioned reads), inside a time budget asserted here. A FIFO as the log does not hang, and a reader
whose reader (glcleanup) goes away stops by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.logs import reader
from glcleanup.logs.remote import agent_source

LOOP_LINE = (b'127.0.0.1 - - [01/Dec/2026:10:00:%02d +0000] "DELETE /v2/acme/web/manifests/latest HTTP/1.1" 400 98 '
             b'"" "GitLab/17.3.5"\n')
BUDGET = 6.0  # seconds for ~50 MB of hostile content on a loaded 2-core CI machine (the old code never ends)


def _write_hostile(path: Path, filler: bytes, size: int) -> None:
    with path.open("wb") as fh:
        for second in range(3):
            fh.write(LOOP_LINE % second)
        block = filler * (1 << 20)
        for _ in range(size >> 20):
            fh.write(block)
        fh.write(b"\n")
        for second in range(3, 6):
            fh.write(LOOP_LINE % second)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("filler", [b"x", b"\x00", b"DELETE /v2/"[:1]], ids=["letters", "nul", "d"])
@pytest.mark.parametrize("mapped", [True, False], ids=["mmap", "pread"])
def test_an_over_long_line_is_skipped_counted_and_bounded(tmp_path: Path, filler: bytes, mapped: bool) -> None:
    """class logs/long-line: 40 MiB without a newline between real lines; every real DELETE still counted."""
    log = tmp_path / "registry.log"
    _write_hostile(log, filler, 40 << 20)
    started = time.monotonic()
    if mapped:
        summary = reader.analyze_path(str(log), None)
    else:  # the positioned-read path (no mmap), as a remote or special file gets it
        fd = os.open(log, os.O_RDONLY)
        try:
            summary = reader.analyze(lambda off, n: os.pread(fd, n, off), os.fstat(fd).st_size, None)
        finally:
            os.close(fd)
    elapsed = time.monotonic() - started
    assert elapsed < BUDGET, f"{elapsed:.1f} s"
    assert summary["long_lines"] == 1
    assert summary["delete_lines"] == 6


@pytest.mark.timeout(60)
def test_logs_cli_reports_the_skipped_line(tmp_path: Path) -> None:
    """class logs/long-line: through `glcleanup logs`, the source says how many lines were skipped."""
    log = tmp_path / "registry.log"
    _write_hostile(log, b"\x00", 20 << 20)
    started = time.monotonic()
    result = CliRunner().invoke(app, ["logs", str(log), "--since", "all", "--registry-host", "local", "-o", "json"])
    assert time.monotonic() - started < BUDGET
    assert result.exit_code in (0, 1), result.output
    source = json.loads(result.stdout)["sources"][0]
    assert source["long_lines_skipped"] == 1
    assert source["delete_lines"] == 6


@pytest.mark.timeout(30)
def test_a_fifo_as_the_log_does_not_hang(tmp_path: Path) -> None:
    """class logs/fifo: refused as not a regular file, at once."""
    fifo = tmp_path / "registry.log"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(OSError, match="not a regular file"):
        reader.analyze_path(str(fifo), None)
    assert time.monotonic() - started < 2.0


@pytest.mark.timeout(30)
def test_the_shipped_reader_stops_when_glcleanup_goes_away(tmp_path: Path) -> None:
    """class logs/orphan: the exact program sent to `python3 -` exits once its stdout reader is gone."""
    program = agent_source() + b"\nimport time as _t\nexit_when_orphaned(0.05)\n_t.sleep(30)\n"
    script = tmp_path / "agent.py"
    script.write_bytes(program.replace(b'if __name__ == "__main__":', b"if False:"))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    assert proc.poll() is None  # still working while someone reads
    assert proc.stdout is not None
    proc.stdout.close()  # glcleanup (or the SSH channel) went away
    started = time.monotonic()
    try:
        code = proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 3
    assert time.monotonic() - started < 2.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("unit", [b"method=DELETE ", b"method=DELETE .uri=/v2/a ",
                                  b"method=DELETE .uri=/v2/a useragent=x "], ids=["method", "uri", "useragent"])
def test_repeated_half_lines_cost_linear_time(tmp_path: Path, unit: bytes) -> None:
    """class logs/backtracking: 4 MiB lines made of a DELETE line's first fields repeated (no status): the
    app-log regex used to retry its lazy gaps from every occurrence (64 KiB took 19 s)."""
    log = tmp_path / "registry.log"
    line = unit * ((4 << 20) // len(unit)) + b"\n"
    log.write_bytes(line + LOOP_LINE % 1 + line)
    started = time.monotonic()
    summary = reader.analyze_path(str(log), None)
    assert time.monotonic() - started < BUDGET
    assert summary["delete_lines"] == 1
