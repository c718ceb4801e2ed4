#!/usr/bin/env python3
"""Benchmark: glcleanup's log scans on a multi-GB docker json log vs `grep -c` and the admin's pipeline.

design.md §10 and issue 12 targets, measured on the same file in the same run:
* the 15-minute window at least 50x faster than `grep -c DELETE` over the whole file;
* a full scan (`--since all`) at >= 2 GB/s and within 2.5x of `grep -c DELETE`;
* and, for reference, the pipeline an admin writes for the same per-repository table:
  `grep -F 'DELETE /v2/' | grep -oE '/v2/... HTTP/1.1" NNN' | sort | uniq -c`.
The log is a loop like the incident's (GitLab/17.3.5 DELETE -> 400, logrus text + access log inside
docker json-file lines) plus normal pulls, spanning hours, in both quoting styles registries write
(go1.11 quotes `http.request.uri`/`vars.name`, Distribution 2.8.2 does not). Each file is written by
repeating a one-minute block with only the minute replaced, measured warm (page cache), deleted after.

    .venv/bin/python scripts/bench_logs.py [--size-gb 2.1] [--dir /tmp] [--rate 4] [--style go1.11|2.8.2|both]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glcleanup.logs import analysis as logs
from glcleanup.logs import reader
from glcleanup.transport import LocalHost
from tests.data.logs.synth import STYLES, write_log

RUNS = 3
PIPELINE = ("grep -F 'DELETE /v2/' \"$1\" | grep -oE '/v2/[^ ]+ HTTP/[0-9.]+\\\\?\" [0-9]{3}' "
            "| sort | uniq -c")


def _timed(fn: Callable[[], Any], runs: int = RUNS) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def bench(path: Path, style: str, args: argparse.Namespace) -> bool:
    began = time.perf_counter()
    minutes, _ = write_log(path, target_bytes=int(args.size_gb * 1e9), per_second=args.rate,
                           normal_per_second=2.0, style=style)
    size = path.stat().st_size
    print(f"\n== style {style}: {size / 1e9:.2f} GB docker json-file log, {minutes / 60:.1f} h of a loop at "
          f"{args.rate:g} DELETE/s + 2 pulls/s (written in {time.perf_counter() - began:.1f} s)")
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    host = LocalHost()
    grep_s, grep_out = _timed(lambda: subprocess.run(["grep", "-c", "DELETE", str(path)],
                                                     capture_output=True, check=True).stdout)
    pipe_s, pipe_out = _timed(lambda: subprocess.run(["sh", "-c", PIPELINE, "sh", str(path)], capture_output=True,
                                                     check=True).stdout, 1)
    window_s, window = _timed(lambda: logs.analyze_sources(host, [str(path)], timedelta(minutes=15)), 5)
    full_s, full = _timed(lambda: logs.analyze_sources(host, [str(path)], None))
    one_s, one = _timed(lambda: reader.analyze_path(str(path), None, workers=1), 1)
    loop, whole = window.loops[0], full.loops[0]
    print(f"grep -c DELETE (whole file): {grep_s:.3f} s ({int(grep_out):,} matching lines)")
    print(f"pipeline grep | grep -o | sort | uniq -c: {pipe_s:.2f} s; "
          f"{' / '.join(' '.join(line.split()) for line in pipe_out.decode().splitlines()[:2])}")
    read_mb = window.sources[0]["bytes_read"] / 1e6
    print(f"window 15m: {window_s * 1000:.1f} ms, read {read_mb:.1f} MB; {loop['per_minute']} DELETE/min on "
          f"{loop['path']} from {loop['user_agent']}, {loop['requests']} requests")
    full_mb = size / full_s / 1e6
    print(f"full scan (--since all, {reader._workers()} workers): {full_s:.3f} s = {full_mb:.0f} MB/s; "
          f"{whole['requests']:,} loop requests {whole['codes']}; one worker: {one_s:.2f} s = "
          f"{size / one_s / 1e6:.0f} MB/s")
    same = one["groups"] and sorted(map(tuple, one["groups"])) == sorted(
        map(tuple, reader.analyze_path(str(path), None)["groups"]))
    print(f"same groups with 1 and {reader._workers()} workers: {'yes' if same else 'NO'}")
    ratios = {"window vs grep -c": grep_s / window_s, "full scan vs grep -c": full_s / grep_s,
              "pipeline vs full scan": pipe_s / full_s}
    print(f"ratio: window {ratios['window vs grep -c']:.0f}x faster than grep -c (target >= 50x); full scan "
          f"{ratios['full scan vs grep -c']:.2f}x grep -c's time (target <= 2.5x); "
          f"{ratios['pipeline vs full scan']:.1f}x faster than the pipeline")
    ok = (ratios["window vs grep -c"] >= 50 and full_mb >= 2000 and ratios["full scan vs grep -c"] <= 2.5
          and bool(same))
    print(f"result ({style}): " + ("PASS" if ok else "FAIL") + f" (load average {os.getloadavg()[0]:.2f})")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.1)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--rate", type=float, default=4.0, help="loop DELETEs per second")
    parser.add_argument("--style", choices=[*STYLES, "both"], default="both")
    args = parser.parse_args()
    target = int(args.size_gb * 1e9)
    free = shutil.disk_usage(args.dir).free
    if free < target * 1.5:
        print(f"not enough space in {args.dir}: {free / 1e9:.1f} GB free, need {target * 1.5 / 1e9:.1f} GB")
        return 2
    results = []
    for style in STYLES if args.style == "both" else (args.style,):
        workdir = Path(tempfile.mkdtemp(prefix="glcleanup-bench-", dir=args.dir))
        try:
            results.append(bench(workdir / "0123abcd-json.log", style, args))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
