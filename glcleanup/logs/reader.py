"""Registry-log reader that runs where the log is: locally, or shipped to the registry host.

Standard library only and Python 3.7+ on purpose: over SSH this file's source is sent on stdin
to the remote `python3 -` (a FIXED program; the path and window are argv data), so only a small
JSON summary crosses the connection instead of gigabytes of log.

What it reads (one line at a time, no format switch needed): docker json-file lines wrapping
logrus text or JSON, logrus text, logrus JSON, the Apache-combined access log, svlogd `current`
(TAI64N `@4000...` or ISO `YYYY-MM-DD_HH:MM:SS.fffff` labels), `journalctl -o cat`. Broken lines
(NUL-filled holes after a truncate, cut lines, hand-copied stray spaces) are tolerated.

Cost is proportional to the window: the newest entry is read from the tail, the window start is
found by binary search on line timestamps (seeks), and only the window is scanned, with a
bytes-level `DELETE` prefilter before any regex runs.
"""

from __future__ import annotations

import calendar
import collections
import json
import mmap
import os
import re
import stat
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aliases only for the checker: the remote python may be 3.7
    from collections.abc import Callable

    Reader = Callable[[int, int], bytes]
    GroupKey = tuple[str, str, int, str]  # path, user agent, status, "app"|"access"
    Buffer = bytes | mmap.mmap

PROBE_BYTES = 8192
SEEK_SLACK = 64 * 1024
TAIL_LIMIT = 8 * 1024 * 1024
CHUNK = 16 * 1024 * 1024

_ISO = re.compile(rb"(\d{4})-(\d\d)-(\d\d)[T_ ](\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?")
_CLF = re.compile(rb"\[(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-]\d{4})\]")
_TAI = re.compile(rb"@(4000[0-9a-f]{12})([0-9a-f]{8})")
_MONTHS = {m: i + 1 for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"))}
_URI = re.compile(rb'/v2/([^\s"\\?]{1,1024}?)/(?:manifests|blobs)/[^\s"\\?]+')  # bounded: linear on any line
_APP_METHOD = re.compile(rb"method\W{0,6}DELETE\b")
_APP_STATUS = re.compile(rb"response\s?\.\s?status\W{0,6}(\d{3})")
_APP_UA = re.compile(rb'useragent(?:\\?")?\s*[=:]\s*(?:\\?"((?:[^"\\]|\\\\)*)|([^\s"\\]+))')
_ACCESS = re.compile(  # "/v2/<path>/<kind>/<ref>", status, user agent of an access-log DELETE
    rb'"DELETE[ \t]+/v2/(\S+)[ \t]+HTTP/[\d.]+\\?"[ \t]*(\d{3})[ \t]+\S+[ \t]*\\?"[^"\n]*?"[ \t]*\\?"([^"\\\n]*)')
# A gap between fields never runs past the next "method": with plain lazy gaps a hostile line holding
# many "method=DELETE" and no ".uri" cost quadratic time (64 KiB took 19 s); stopped there, each match
# attempt ends at the next candidate, so the cost is linear (8 MiB of such content: under 2 s).
_APP = re.compile(  # logrus text or JSON (keys sorted): "/v2/<path>/<kind>/<ref>", quoted/plain agent, status
    rb'method\\?"?[ \t]*[=:][ \t]*\\?"?DELETE\b(?:(?!method)[^\n])*?\.uri\\?"?[ \t]*[=:][ \t]*\\?"?/v2/([^\s"\\]+)'
    rb'(?:(?!method)[^\n])*?useragent\\?"?[ \t]*[=:][ \t]*(?:\\?"([^"\\\n]*)|([^\s"\\,]+))'
    rb'(?:(?!method)[^\n])*?status\\?"?[ \t]*[=:][ \t]*(\d{3})')
_REPO = re.compile(r"\A(.+?)/(?:manifests|blobs)/")
_base_cache: dict[tuple[bytes, ...], int] = {}


def _tz_seconds(tz: bytes | None) -> int:
    if not tz or tz == b"Z":
        return 0
    sign = -1 if tz[:1] == b"-" else 1
    digits = tz[1:].replace(b":", b"")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60)


def parse_time(line: bytes) -> float | None:
    """Epoch seconds of a log line (first timestamp found), or None when it has none."""
    if line[:1] == b"@":
        tai = _TAI.match(line)
        if tai:
            return int(tai.group(1), 16) - (2**62 + 10) + int(tai.group(2), 16) / 1e9
    iso = _ISO.search(line)
    if iso:
        year, mon, day, hh, mm, ss, frac, tz = iso.groups()
        key = (year, mon, day, hh, mm, tz or b"Z")
        base = _base_cache.get(key)
        if base is None:
            base = calendar.timegm((int(year), int(mon), int(day), int(hh), int(mm), 0)) - _tz_seconds(tz)
            if len(_base_cache) > 4096:
                _base_cache.clear()
            _base_cache[key] = base
        return base + int(ss) + (float(frac) if frac else 0.0)
    clf = _CLF.search(line)
    if clf:
        day, mon_name, year, hh, mm, ss, tz = clf.groups()
        month = _MONTHS.get(mon_name)
        if month:
            stamp = calendar.timegm((int(year), month, int(day), int(hh), int(mm), int(ss)))
            return float(stamp - _tz_seconds(tz))
    return None


def parse_delete(line: bytes) -> tuple[str, str, int, str] | None:
    """(repository path, user agent, status, kind) of a registry DELETE line, else None."""
    uri = _URI.search(line)
    if uri is None:
        return None
    path = uri.group(1).decode("utf-8", "replace")
    if b"useragent" in line:
        if not _APP_METHOD.search(line):
            return None
        status = _APP_STATUS.search(line)
        if status is None:
            return None
        agent = _APP_UA.search(line)
        ua = (agent.group(1) if agent.group(1) is not None else agent.group(2)) if agent else b""
        return path, _unescape(ua), int(status.group(1)), "app"
    access = _ACCESS.search(line)
    if access is None:
        return None
    return path, _unescape(access.group(3)), int(access.group(2)), "access"


def _repo(target: bytes) -> str | None:
    """`user/repo` from `user/repo/manifests/latest` (None for other DELETE targets)."""
    found = _REPO.match(_unescape(target))
    return found.group(1) if found else None


def _unescape(value: bytes) -> str:
    return value.replace(b"\\\\", b"\\").decode("utf-8", "replace").strip()


class Stats:
    """Counts per (path, user agent, status, kind), plus what the window covered."""

    def __init__(self) -> None:
        self.groups: dict[GroupKey, list[float]] = {}  # [count, first, last]
        self.delete_lines = 0
        self.unparsed = 0
        self.nul_bytes = 0
        self.bytes_scanned = 0
        self.long_lines = 0  # lines longer than CHUNK: skipped (no registry writes those), counted
        self.past_start = False

    def add(self, line: bytes, start: float | None) -> None:
        if line[:1] == b"\x00" or line[-1:] == b"\x00":
            before = len(line)
            line = line.strip(b"\x00")
            self.nul_bytes += before - len(line)
        found = parse_delete(line)
        if found is None:
            if b"DELETE" in line and b"/v2/" in line:
                self.unparsed += 1
            return
        when = parse_time(line)
        if start is not None and when is not None and when < start:
            return
        self.delete_lines += 1
        entry = self.groups.get(found)
        if entry is None:
            self.groups[found] = [1, when if when is not None else -1.0, when if when is not None else -1.0]
            return
        entry[0] += 1
        if when is not None:
            if entry[1] < 0 or when < entry[1]:
                entry[1] = when
            if when > entry[2]:
                entry[2] = when

    def scan(self, buf: Buffer, pos: int, end: int, start: float | None) -> None:
        """Count the DELETEs in the complete lines of buf[pos:end] stamped >= start.

        Fast path: one `findall` over the range counts them in C, on the access log when present
        (it logs every request, and each request is also in the app log: counting one avoids
        double counting), else on the logrus text/JSON app lines. Per-line work is left for the
        window's first lines, each group's first and last line, and lines neither regex knows.
        `buf` may be an mmap, so nothing is copied.
        """
        self.bytes_scanned += end - pos
        if start is not None and not self.past_start:
            pos = self._head(buf, pos, end, start)
        for regex, kind in ((_ACCESS, "access"), (_APP, "app")):
            hits = regex.findall(buf, pos, end)
            if hits:
                self._add_fast(buf, pos, end, hits, regex, kind)
                return
        find, rfind, add = buf.find, buf.rfind, self.add
        at = find(b"DELETE", pos, end)
        while at != -1:
            begin = max(rfind(b"\n", pos, at) + 1, pos)
            stop = find(b"\n", at, end)
            stop = end if stop == -1 else stop
            add(buf[begin:stop], None)
            at = find(b"DELETE", stop, end)

    def _head(self, buf: Buffer, pos: int, end: int, start: float) -> int:
        """Drop lines stamped before the window start; returns where the window begins."""
        while pos < end:
            stop = buf.find(b"\n", pos, end)
            stop = end if stop == -1 else stop
            line = buf[pos:stop]
            when = parse_time(line.strip(b"\x00"))
            if when is not None and when >= start:
                self.past_start = True
                return pos
            if b"DELETE" in line:
                self.add(line, start)
            pos = stop + 1
        return end

    def _add_fast(self, buf: Buffer, pos: int, end: int, hits: list[tuple[bytes, ...]],
                  regex: re.Pattern[bytes], kind: str) -> None:
        """Count findall hits in C, fold them into groups, then find each group's first/last time."""
        names: dict[tuple[bytes, ...], GroupKey] = {}
        counts: dict[GroupKey, int] = {}
        for hit, count in collections.Counter(hits).items():
            target, status, agent = _fields(hit, kind)
            repo = _repo(target)
            if repo is None:
                continue
            key = (repo, _unescape(agent), int(status), kind)
            names[hit] = key
            counts[key] = counts.get(key, 0) + count
        for key, (first, last) in _edges(buf, pos, end, names, regex).items():
            self.delete_lines += counts[key]
            entry = self.groups.setdefault(key, [0, -1.0, -1.0])
            entry[0] += counts[key]
            if first is not None and (entry[1] < 0 or first < entry[1]):
                entry[1] = first
            if last is not None and last > entry[2]:
                entry[2] = last

    def to_json(self) -> list[list[Any]]:
        return [[k[0], k[1], k[2], k[3], int(v[0]), v[1], v[2]] for k, v in self.groups.items()]


def _fields(hit: tuple[bytes, ...], kind: str) -> tuple[bytes, bytes, bytes]:
    """(target, status, user agent) from an _ACCESS or _APP findall tuple."""
    if kind == "access":
        return hit[0], hit[1], hit[2]
    return hit[0], hit[3], hit[1] or hit[2]


def _edges(buf: Buffer, pos: int, end: int, names: dict[tuple[bytes, ...], GroupKey],
           regex: re.Pattern[bytes]) -> dict[GroupKey, tuple[float | None, float | None]]:
    """Time of the first and last line of each group, searching from both ends only.

    Matches are mapped to their group through `names`, so many distinct references (digests)
    in a few repositories still stop the search as soon as every group has been seen.
    """
    wanted = set(names.values())
    first: dict[GroupKey, float | None] = {}
    for match in regex.finditer(buf, pos, end):
        key = names.get(match.groups(b""))
        if key is not None and key not in first:
            first[key] = _time_at(buf, match.start(), pos, end)
            if len(first) == len(wanted):
                break
    last: dict[GroupKey, float | None] = {}
    size = 64 * 1024
    while len(last) < len(wanted):
        begin = max(pos, end - size)
        begin = max(buf.rfind(b"\n", pos, begin) + 1, pos) if begin > pos else pos
        found: dict[GroupKey, int] = {}
        for match in regex.finditer(buf, begin, end):
            key = names.get(match.groups(b""))
            if key is not None:
                found[key] = match.start()
        for key, at in found.items():
            if key not in last:
                last[key] = _time_at(buf, at, pos, end)
        if begin == pos:
            break
        size *= 4
    return {k: (first.get(k), last.get(k)) for k in wanted}


def _time_at(buf: Buffer, at: int, pos: int, end: int) -> float | None:
    begin = max(buf.rfind(b"\n", pos, at) + 1, pos)
    stop = buf.find(b"\n", at, end)
    return parse_time(buf[begin:stop if stop != -1 else end].strip(b"\x00"))


def _stamp_after(read: Reader, offset: int, size: int) -> float | None:
    """Timestamp of the first complete line after `offset` (None in a NUL hole or garbage)."""
    want = PROBE_BYTES
    while True:
        buf = read(offset, min(want, size - offset))
        if not buf:
            return None
        lines = buf.split(b"\n")
        if offset > 0:
            lines = lines[1:]
        for line in lines[:-1] if offset + len(buf) < size else lines:
            when = parse_time(line.strip(b"\x00"))
            if when is not None:
                return when
        if offset + len(buf) >= size or want >= 1024 * 1024 or not buf.strip(b"\x00"):
            return None
        want *= 4


def newest_time(read: Reader, size: int) -> float | None:
    """The newest entry's time, read backwards from the end (a cut last line is skipped)."""
    step, end = 64 * 1024, size
    carry = b""
    while end > 0 and size - end < TAIL_LIMIT:
        begin = max(0, end - step)
        buf = read(begin, end - begin) + carry
        lines = buf.split(b"\n")
        carry = lines[0] if begin > 0 else b""
        for line in reversed(lines[1:] if begin > 0 else lines):
            when = parse_time(line.strip(b"\x00"))
            if when is not None:
                return when
        end = begin
    return None


def window_offset(read: Reader, size: int, start: float) -> int:
    """An offset at most SEEK_SLACK before the first line stamped >= start (binary search)."""
    lo, hi = 0, size
    while hi - lo > SEEK_SLACK:
        mid = (lo + hi) // 2
        when = _stamp_after(read, mid, size)
        if when is None or when < start:
            lo = mid
        else:
            hi = mid
    return lo


class Counter:
    """Wraps a reader to count the bytes it read (tests assert seeking stays cheap)."""

    def __init__(self, read: Reader) -> None:
        self.read_fn = read
        self.bytes_read = 0

    def __call__(self, offset: int, length: int) -> bytes:
        data = self.read_fn(offset, length)
        self.bytes_read += len(data)
        return data


def analyze(read: Reader, size: int, since: float | None, view: Buffer | None = None) -> dict[str, Any]:
    """Summarise the window (`since` seconds before the newest entry; None = whole file).

    `read(offset, n)` serves the probes; `view` (an mmap of the whole file) lets the scan run on
    the mapped pages without copying, otherwise the window is read in CHUNK-sized pieces.
    """
    counter = Counter(read)
    newest = newest_time(counter, size)
    hole = hole_end(counter, size)
    start: float | None = None
    offset = 0
    if since is not None and newest is not None:
        start = newest - since
        offset = window_offset(counter, size, start)
    offset = max(offset, hole)
    oldest = _stamp_after(counter, offset, size) if offset > hole else _first_stamp(counter, size, hole)
    if start is not None and oldest is not None and oldest < start:
        oldest = start
    stats = Stats()
    stats.nul_bytes = hole
    pos = offset
    if offset > hole:
        head = counter(offset, min(size - offset, PROBE_BYTES))
        cut = head.find(b"\n")
        pos = offset + (cut + 1 if cut >= 0 else len(head))
    if view is not None:
        while pos < size:
            stop = min(size, pos + CHUNK)
            if stop < size:
                stop = view.rfind(b"\n", pos, stop) + 1
                if stop == 0:  # no newline in a whole chunk: an over-long line, skipped in one find
                    nl = view.find(b"\n", pos + CHUNK)
                    stats.long_lines += 1
                    counter.bytes_read += (size if nl == -1 else nl + 1) - pos
                    pos = size if nl == -1 else nl + 1
                    continue
            stats.scan(view, pos, stop, start)
            counter.bytes_read += stop - pos
            pos = stop
    carry = b""
    skipping = False  # inside an over-long line: drop bytes up to its newline
    while view is None and pos < size:
        buf = carry + counter(pos, min(CHUNK, size - pos))
        pos += len(buf) - len(carry)
        carry = b""
        if skipping:
            nl = buf.find(b"\n")
            if nl == -1:
                continue
            buf, skipping = buf[nl + 1:], False
        if pos < size:
            cut = buf.rfind(b"\n") + 1
            if cut == 0 and len(buf) >= CHUNK:
                stats.long_lines += 1
                skipping = True
                continue
            buf, carry = buf[:cut], buf[cut:]
        stats.scan(buf, 0, len(buf), start)
    return {
        "size": size, "offset": offset, "newest": newest, "oldest": oldest, "start": start,
        "bytes_read": counter.bytes_read, "bytes_scanned": stats.bytes_scanned,
        "delete_lines": stats.delete_lines, "unparsed": stats.unparsed, "nul_bytes": stats.nul_bytes,
        "long_lines": stats.long_lines, "groups": stats.to_json(),
    }


def _first_stamp(read: Reader, size: int, begin: int = 0) -> float | None:
    """Oldest entry: the first timestamp from `begin` (the end of a leading NUL hole)."""
    buf = read(begin, min(1024 * 1024, size - begin)).lstrip(b"\x00")
    for line in buf.split(b"\n")[:200]:
        when = parse_time(line)
        if when is not None:
            return when
    return None


def hole_end(read: Reader, size: int) -> int:
    """Length of a leading NUL hole (a non-append writer after truncate), by binary search."""
    if size == 0 or read(0, 1) != b"\x00":
        return 0
    lo, hi = 0, size
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if read(mid, 1) == b"\x00":
            lo = mid
        else:
            hi = mid
    return hi


def analyze_path(path: str, since: float | None) -> dict[str, Any]:
    """analyze() on a local file with positioned reads, plus the filesystem's free space."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError("not a regular file: " + path)
        size = info.st_size
        view = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None
        try:
            result = analyze(lambda off, n: os.pread(fd, n, off), size, since, view)
        finally:
            if view is not None:
                view.close()
    finally:
        os.close(fd)
    vfs = os.statvfs(path)
    result["disk_free_bytes"] = vfs.f_bavail * vfs.f_frsize
    result["path"] = path
    return result


def exit_when_orphaned(interval: float = 0.2) -> threading.Thread:
    """Stop this process when whoever reads its stdout is gone (glcleanup killed, SSH link cut): a closed
    pipe shows as POLLERR/POLLHUP on our end, a dead parent as a new parent pid."""
    import select

    parent = os.getppid()
    poller = select.poll()
    poller.register(sys.stdout.fileno(), 0)  # only errors and hang-ups are reported

    def watch() -> None:
        while True:
            gone = any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _fd, ev in poller.poll(0))
            if gone or os.getppid() != parent:
                os._exit(3)
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="glcleanup-orphan-watch", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> int:
    """`python3 - PATH SINCE_SECONDS|all`: one JSON document on stdout (exit 2 on bad path)."""
    exit_when_orphaned()
    try:
        since = None if argv[1] == "all" else float(argv[1])
        out = analyze_path(argv[0], since)
    except (OSError, IndexError, ValueError) as exc:
        sys.stdout.write(json.dumps({"error": str(exc)}) + "\n")
        return 2
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
