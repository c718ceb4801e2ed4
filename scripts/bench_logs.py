#!/usr/bin/env python3
"""Benchmark: the 15-minute window of a multi-GB docker json log vs `grep -c` over the whole file.

design.md §10 targets: the window at least 50x faster than a full `grep -c` on a 2 GB log, and a
full scan at no less than 200 MB/s. The log is a loop like the incident's (GitLab/17.3.5 DELETE ->
400, logrus text + access log inside docker json-file lines) plus normal pulls, spanning hours.
It is written by repeating a one-minute block with only the minute replaced, and deleted at the end.

    .venv/bin/python scripts/bench_logs.py [--size-gb 2.1] [--dir /tmp] [--rate 4]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glcleanup.logs import analysis as logs
from glcleanup.transport import LocalHost
from tests.data.logs.synth import write_log

RUNS = 3


def _timed(fn, runs: int = RUNS) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.1)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--rate", type=float, default=4.0, help="loop DELETEs per second")
    args = parser.parse_args()
    target = int(args.size_gb * 1e9)
    free = shutil.disk_usage(args.dir).free
    if free < target * 1.5:
        print(f"not enough space in {args.dir}: {free / 1e9:.1f} GB free, need {target * 1.5 / 1e9:.1f} GB")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="glcleanup-bench-", dir=args.dir))
    path = workdir / "0123abcd-json.log"
    try:
        began = time.perf_counter()
        minutes, _ = write_log(path, target_bytes=target, per_second=args.rate, normal_per_second=2.0)
        size = path.stat().st_size
        print(f"file: {size / 1e9:.2f} GB docker json-file log, {minutes / 60:.1f} h of a loop at "
              f"{args.rate:g} DELETE/s + 2 pulls/s (written in {time.perf_counter() - began:.1f} s)")
        host = LocalHost()
        grep_s, grep_out = _timed(lambda: subprocess.run(["grep", "-c", "DELETE", str(path)],
                                                         capture_output=True, check=True).stdout)
        window_s, window = _timed(lambda: logs.analyze_sources(host, [str(path)], timedelta(minutes=15)), 5)
        full_s, full = _timed(lambda: logs.analyze_sources(host, [str(path)], None))
        assert isinstance(window, logs.LogReport)
        assert isinstance(full, logs.LogReport)
        loop = window.loops[0]
        matches = int(bytes(grep_out))  # type: ignore[call-overload]
        print(f"grep -c DELETE (whole file): {grep_s:.3f} s ({matches:,} matching lines)")
        read_mb = window.sources[0]["bytes_read"] / 1e6
        print(f"window 15m (analyze_sources): {window_s * 1000:.1f} ms, read {read_mb:.1f} MB; "
              f"{loop['per_minute']} DELETE/min on {loop['path']} from {loop['user_agent']}, "
              f"{loop['requests']} requests")
        print(f"ratio: window is {grep_s / window_s:.0f}x faster than grep -c over the whole file (target >= 50x)")
        print(f"full scan (--since all): {full_s:.2f} s = {size / full_s / 1e6:.0f} MB/s (target >= 200 MB/s); "
              f"{full.loops[0]['requests']:,} loop requests")
        ok = grep_s / window_s >= 50 and size / full_s / 1e6 >= 200
        print("result: " + ("PASS" if ok else "FAIL"))
        return 0 if ok else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
