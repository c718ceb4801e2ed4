"""Reading a registry log on the registry host: the filtering happens there, not after a download.

Preferred: the host has `python3` (or GitLab's embedded one); `reader.py`'s own source is sent
on stdin to `python3 -` and only its JSON summary comes back. Fallback: plain POSIX tools, driven
from here: `tail -c +N | head -c M` probes for the binary search, then `grep -a -F DELETE` over the
window only, gzip-compressed when gzip exists. Every script is a FIXED string run as
`sh -c SCRIPT sh ARG...`: paths and numbers travel as positional arguments, never as shell source.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from importlib import resources
from typing import Any

from glcleanup.errors import ConnectError, NotFoundError
from glcleanup.logs import reader as logs_agent
from glcleanup.transport import Host
from glcleanup.transport.sh import FILE_SIZE, run_script

AGENT_SH = (
    'for py in python3 /opt/gitlab/embedded/bin/python3; do '
    'if command -v "$py" >/dev/null 2>&1; then exec "$py" - "$@"; fi; done; exit 127'
)
READ_SH = 'tail -c +"$2" -- "$1" | head -c "$3"'
GREP_SH = ('tail -c +"$2" -- "$1" | { if [ "$3" = 1 ]; then IFS= read -r _; fi; grep -a -F DELETE; } '
           '| { gzip -c -1 2>/dev/null || cat; }')
DF_SH = 'df -Pk -- "$1" | tail -n 1'
TIMEOUT = 600.0
PROGRESS_EVERY = 0.5  # seconds between the remote reader's progress lines


def agent_source() -> bytes:
    """The exact program the remote python runs (our own bundled file)."""
    return (resources.files("glcleanup.logs") / "reader.py").read_bytes()


def analyze_remote(host: Host, path: str, since: float | None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Summary of the window, computed on `host`; falls back to POSIX tools without python3.

    With `progress`, the reader reports `{"progress": [done, total]}` lines while it scans; they are
    passed on as they arrive (over SSH too), and only the last line is the summary.
    """
    since_arg = "all" if since is None else repr(float(since))
    extra = ["progress", repr(PROGRESS_EVERY)] if progress is not None else []
    result = run_script(host, AGENT_SH, path, since_arg, *extra, stdin=agent_source(), timeout=TIMEOUT,
                        on_stdout=ProgressLines(progress) if progress is not None else None)
    if result.exit_code == 127:
        return analyze_with_shell(host, path, since)
    try:
        document: dict[str, Any] = json.loads(result.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        if b"SyntaxError" in result.stderr:  # a python3 older than 3.7 on the registry host
            return analyze_with_shell(host, path, since)
        raise ConnectError(f"log reader on {host.name} failed: {result.error_text.strip()[-300:]}") from exc
    if "error" in document:
        raise NotFoundError(f"cannot read {path} on {host.name}: {document['error']}")
    document["transport"] = "python3"
    return document


class ProgressLines:
    """Turns the reader's stdout, chunk by chunk, into progress(done, total) calls.

    The lines come from another host: anything but a well-formed progress line is ignored here (the
    summary line is parsed once the reader has finished), and a line never grows past 4 KiB.
    """

    def __init__(self, progress: Callable[[int, int], None]) -> None:
        self.progress = progress
        self.pending = b""

    def __call__(self, chunk: bytes) -> None:
        lines = (self.pending + chunk).split(b"\n")
        self.pending = lines.pop()[-4096:]
        for line in lines:
            if line.startswith(b'{"progress"') and len(line) < 200:
                self._report(line)

    def _report(self, line: bytes) -> None:
        try:
            done, total = json.loads(line)["progress"]
        except (ValueError, TypeError, KeyError):
            return
        if isinstance(done, int) and isinstance(total, int) and 0 <= done <= total:
            self.progress(done, total)


class ShellReader:
    """`read(offset, n)` through `tail -c | head -c` on the remote host (one command per probe)."""

    def __init__(self, host: Host, path: str) -> None:
        self.host, self.path = host, path

    def size(self) -> int:
        result = run_script(self.host, FILE_SIZE, self.path, timeout=TIMEOUT)
        if result.exit_code != 0:
            raise NotFoundError(f"cannot read {self.path} on {self.host.name}: {result.error_text.strip()}")
        return int(result.text.strip() or 0)

    def __call__(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return run_script(self.host, READ_SH, self.path, str(offset + 1), str(length), timeout=TIMEOUT).stdout

    def delete_lines(self, offset: int, skip_partial: bool) -> bytes:
        """DELETE lines from `offset` on (a partial first line is skipped), decompressed."""
        skip = "1" if skip_partial else "0"
        data = run_script(self.host, GREP_SH, self.path, str(offset + 1), skip, timeout=TIMEOUT).stdout
        if data[:2] == b"\x1f\x8b":
            try:
                return gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:
                raise ConnectError(f"garbled output from grep on {self.host.name}: {exc}") from exc
        return data

    def disk_free(self) -> int | None:
        fields = run_script(self.host, DF_SH, self.path, timeout=TIMEOUT).text.split()
        return int(fields[3]) * 1024 if len(fields) >= 4 and fields[3].isdigit() else None


def analyze_with_shell(host: Host, path: str, since: float | None) -> dict[str, Any]:
    """The agent's algorithm with remote probes; only DELETE lines of the window come back."""
    reader = ShellReader(host, path)
    size = reader.size()
    counter = logs_agent.Counter(reader)
    newest = logs_agent.newest_time(counter, size)
    hole = logs_agent.hole_end(counter, size)
    start = None if since is None or newest is None else newest - since
    offset = max(hole, 0 if start is None else logs_agent.window_offset(counter, size, start))
    oldest = (logs_agent._stamp_after(counter, offset, size) if offset > hole
              else logs_agent._first_stamp(counter, size, hole))
    if start is not None and oldest is not None and oldest < start:
        oldest = start
    lines = reader.delete_lines(offset, skip_partial=offset > hole)
    counter.bytes_read += len(lines)
    stats = logs_agent.Stats()
    stats.nul_bytes = hole
    stats.scan(lines, 0, len(lines), start)
    return {
        "size": size, "offset": offset, "newest": newest, "oldest": oldest, "start": start,
        "bytes_read": counter.bytes_read, "bytes_scanned": stats.bytes_scanned,
        "delete_lines": stats.delete_lines, "unparsed": stats.unparsed, "nul_bytes": stats.nul_bytes,
        "groups": stats.to_json(), "disk_free_bytes": reader.disk_free(), "path": path,
        "registry_lines": stats.delete_lines > 0 or logs_agent.registry_lines(counter, size),
        "transport": "shell",
    }
