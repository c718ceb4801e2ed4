"""Registry-log reader that runs where the log is: locally, or shipped to the registry host.

Standard library only and Python 3.7+ on purpose: over SSH this file's source is sent on stdin
to the remote `python3 -` (a FIXED program; the path and window are argv data), so only a small
JSON summary crosses the connection instead of gigabytes of log.

What it reads (one line at a time, no format switch needed): docker json-file lines wrapping
logrus text or JSON, logrus text, logrus JSON, the Apache-combined access log, svlogd `current`
(TAI64N `@4000...` or ISO `YYYY-MM-DD_HH:MM:SS.fffff` labels), `journalctl -o cat`. Broken lines
(NUL-filled holes after a truncate, cut lines, hand-copied stray spaces) are tolerated.

Cost is proportional to the window: the newest entry is read from the tail, the window start is
found by binary search on line timestamps (seeks), and only the window is scanned.

Scanning runs at disk speed: a large range is split at line boundaries between the CPUs (forked
workers, each reading its own byte range with pread), and each chunk first goes through a
pre-filter that needs no regex. Access-log DELETE lines are identical apart from their timestamps,
so once a chunk has been parsed, every later chunk is COUNTED: `bytes.count` of each known request
text, checked against the count of `"DELETE` (every access-log match starts with it). Only when the
numbers disagree is the chunk parsed with the regexes, so the result is the same as a full parse.
"""

from __future__ import annotations

import calendar
import collections
import json
import os
import re
import signal
import stat
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aliases only for the checker: the remote python may be 3.7
    import mmap
    from collections.abc import Callable

    Reader = Callable[[int, int], bytes]
    Progress = Callable[[int, int], None]  # (bytes scanned, bytes to scan)
    GroupKey = tuple[str, str, int, str]  # path, user agent, status, "app"|"access"
    Buffer = bytes | bytearray | mmap.mmap

PROBE_BYTES = 8192
SEEK_SLACK = 64 * 1024
TAIL_LIMIT = 8 * 1024 * 1024
CHUNK = 2 * 1024 * 1024  # fits the L2 cache: the count passes after the read hit it, not RAM
PARALLEL_MIN = 64 * 1024 * 1024  # below this a range is scanned in-process: forking would cost more
MAX_WORKERS = 8
MAX_KEYS = 32  # distinct access-log request texts worth counting; more (e.g. digests) are parsed
ACCESS_START = b'"DELETE'  # every _ACCESS match starts with this
LEARN_BYTES = 256 * 1024  # parsed first in a big chunk, so that the rest of it can be counted

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
# Something only a registry writes: a /v2/ request, logrus' http.request.* fields, its startup lines.
_REGISTRY_MARK = re.compile(rb"/v2/|http\.request\.|service=registry|docker/distribution|registry/")
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
        self.keys: dict[bytes, GroupKey | None] = {}  # access-log request text (+ its end) -> group
        self.misses = 0  # chunks where counting did not explain every DELETE (then parsing is used)

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

        Pre-filter first: once the access log's request texts are known, the chunk is only counted
        (`_count_known`, exact or it declines). Otherwise one `findall` over the range counts them in
        C, on the access log when present (it logs every request, and each request is also in the app
        log: counting one avoids double counting), else on the logrus text/JSON app lines; the first
        LEARN_BYTES of a big chunk are parsed alone so that the rest can be counted. Per-line work is
        left for the window's first lines, each group's first and last line, and lines neither regex
        knows. `buf` may be an mmap or a bytearray (nothing is copied; counting needs bytes-like).
        """
        self.bytes_scanned += end - pos
        if start is not None and not self.past_start:
            pos = self._head(buf, pos, end, start)
        counting = self.misses < 3 and isinstance(buf, (bytes, bytearray))
        if counting and not self.keys and end - pos > 4 * LEARN_BYTES:
            cut = buf.rfind(b"\n", pos, pos + LEARN_BYTES) + 1
            if cut > pos:
                self._parse(buf, pos, cut, learn=True)
                pos = cut
        if counting and self.keys:
            if self._count_known(buf, pos, end):  # type: ignore[arg-type]
                self.misses = 0
                return
            self.misses += 1  # three chunks in a row that counting cannot explain: parse from now on
        self._parse(buf, pos, end, learn=counting)

    def _parse(self, buf: Buffer, pos: int, end: int, learn: bool) -> None:
        """The regex path over buf[pos:end]; with `learn`, remember the access-log request texts seen."""
        for regex, kind in ((_ACCESS, "access"), (_APP, "app")):
            hits = regex.findall(buf, pos, end)
            if hits:
                names = self._add_fast(buf, pos, end, hits, regex, kind)
                if kind == "access" and learn and len(self.keys) < MAX_KEYS:
                    self._learn(buf, pos, end, names)
                return
        find, rfind, add = buf.find, buf.rfind, self.add
        at = find(b"DELETE", pos, end)
        while at != -1:
            begin = max(rfind(b"\n", pos, at) + 1, pos)
            stop = find(b"\n", at, end)
            stop = end if stop == -1 else stop
            add(bytes(buf[begin:stop]), None)
            at = find(b"DELETE", stop, end)

    def _count_known(self, buf: bytes | bytearray, pos: int, end: int) -> bool:
        """Count the access-log DELETEs of buf[pos:end] by their known texts; False if any is unknown.

        Exact: every _ACCESS match starts with `"DELETE`; a key is a whole match plus the character
        that ended it, so wherever a key occurs the regex would match exactly it, and no key holds
        another `"DELETE`, so key occurrences are disjoint. If the keys' counts add up to the count
        of `"DELETE` (of `"DELETE ` where the chunk has no tab, so that `[ \t]+` can only be spaces),
        the regex's findall would have returned exactly these, no more.
        """
        # Without a tab byte in the chunk (docker json escapes them) every match starts with `"DELETE `,
        # a longer needle that bytes.count skips through faster.
        needle = ACCESS_START if buf.find(b"\t", pos, end) != -1 else ACCESS_START + b" "
        total = buf.count(needle, pos, end)
        if total == 0:
            return False  # no access line here: the regex path decides (app log or nothing)
        found: dict[bytes, int] = {}
        seen = 0
        for key in self.keys:
            n = buf.count(key, pos, end)
            if n:
                found[key] = n
                seen += n
                if seen == total:
                    break
        if seen != total:
            return False
        edges: dict[GroupKey, list[int]] = {}
        for key, n in found.items():
            group = self.keys[key]
            if group is None:
                continue
            self.delete_lines += n
            entry = self.groups.setdefault(group, [0, -1.0, -1.0])
            entry[0] += n
            at = edges.setdefault(group, [end, -1])
            at[0] = min(at[0], buf.find(key, pos, end))
            at[1] = max(at[1], buf.rfind(key, pos, end))
        for group, (first_at, last_at) in edges.items():
            entry = self.groups[group]
            first, last = _time_at(buf, first_at, pos, end), _time_at(buf, last_at, pos, end)
            if first is not None and (entry[1] < 0 or first < entry[1]):
                entry[1] = first
            if last is not None and last > entry[2]:
                entry[2] = last
        return True

    def _learn(self, buf: Buffer, pos: int, end: int, names: dict[tuple[bytes, ...], GroupKey | None]) -> None:
        """Remember the text of every distinct access-log match in the chunk (up to MAX_KEYS)."""
        for match in _ACCESS.finditer(buf, pos, end):
            stop = match.end()
            if stop >= end:
                continue  # no end character seen: not a safe key
            key = bytes(buf[match.start():stop + 1])
            if key in self.keys or key.find(ACCESS_START, 1) != -1:
                continue
            self.keys[key] = names.get(match.groups())
            if len(self.keys) >= MAX_KEYS:
                return

    def _head(self, buf: Buffer, pos: int, end: int, start: float) -> int:
        """Drop lines stamped before the window start; returns where the window begins."""
        while pos < end:
            stop = buf.find(b"\n", pos, end)
            stop = end if stop == -1 else stop
            line = bytes(buf[pos:stop])
            when = parse_time(line.strip(b"\x00"))
            if when is not None and when >= start:
                self.past_start = True
                return pos
            if b"DELETE" in line:
                self.add(line, start)
            pos = stop + 1
        return end

    def _add_fast(self, buf: Buffer, pos: int, end: int, hits: list[tuple[bytes, ...]],
                  regex: re.Pattern[bytes], kind: str) -> dict[tuple[bytes, ...], GroupKey | None]:
        """Count findall hits in C, fold them into groups, then find each group's first/last time.

        Returns each distinct hit's group (None for DELETEs of something that is not a manifest/blob).
        """
        names: dict[tuple[bytes, ...], GroupKey] = {}
        counts: dict[GroupKey, int] = {}
        every: dict[tuple[bytes, ...], GroupKey | None] = {}
        for hit, count in collections.Counter(hits).items():
            target, status, agent = _fields(hit, kind)
            repo = _repo(target)
            every[hit] = None
            if repo is None:
                continue
            key = (repo, _unescape(agent), int(status), kind)
            names[hit] = every[hit] = key
            counts[key] = counts.get(key, 0) + count
        for key, (first, last) in _edges(buf, pos, end, names, regex).items():
            self.delete_lines += counts[key]
            entry = self.groups.setdefault(key, [0, -1.0, -1.0])
            entry[0] += counts[key]
            if first is not None and (entry[1] < 0 or first < entry[1]):
                entry[1] = first
            if last is not None and last > entry[2]:
                entry[2] = last
        return every

    def to_json(self) -> list[list[Any]]:
        return [[k[0], k[1], k[2], k[3], int(v[0]), v[1], v[2]] for k, v in self.groups.items()]

    def dump(self) -> dict[str, Any]:
        """What a worker sends back (JSON)."""
        return {"groups": self.to_json(), "delete_lines": self.delete_lines, "unparsed": self.unparsed,
                "nul_bytes": self.nul_bytes, "bytes_scanned": self.bytes_scanned, "long_lines": self.long_lines}

    @classmethod
    def load(cls, doc: dict[str, Any]) -> Stats:
        stats = cls()
        for path, agent, status, kind, count, first, last in doc["groups"]:
            stats.groups[(str(path), str(agent), int(status), str(kind))] = [int(count), float(first), float(last)]
        for name in ("delete_lines", "unparsed", "nul_bytes", "bytes_scanned", "long_lines"):
            setattr(stats, name, int(doc[name]))
        return stats

    def merge(self, other: Stats) -> None:
        """Fold another range's counts in: counts add, first is the earliest, last the latest."""
        for key, (count, first, last) in other.groups.items():
            entry = self.groups.setdefault(key, [0, -1.0, -1.0])
            entry[0] += count
            if first >= 0 and (entry[1] < 0 or first < entry[1]):
                entry[1] = first
            if last > entry[2]:
                entry[2] = last
        self.delete_lines += other.delete_lines
        self.unparsed += other.unparsed
        self.nul_bytes += other.nul_bytes
        self.bytes_scanned += other.bytes_scanned
        self.long_lines += other.long_lines


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
    return parse_time(bytes(buf[begin:stop if stop != -1 else end]).strip(b"\x00"))


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


def registry_lines(read: Reader, size: int) -> bool:
    """Whether the log's tail (last 256 KB) looks like a registry's: an empty or foreign log is not evidence."""
    begin = max(0, size - 256 * 1024)
    return bool(_REGISTRY_MARK.search(read(begin, size - begin))) if size else False


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

    def __getattr__(self, name: str) -> Any:
        if name != "read_into" or not hasattr(self.read_fn, "read_into"):
            raise AttributeError(name)
        inner = self.read_fn.read_into

        def read_into(buf: bytearray, offset: int, length: int) -> int:
            got = int(inner(buf, offset, length))
            self.bytes_read += got
            return got

        return read_into


class FileReader:
    """Positioned reads of one open file; `read_into` fills a caller's buffer (no new allocation)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def read_into(self, buf: bytearray, offset: int, length: int) -> int:
        view = memoryview(buf)[:length]
        done = 0
        while done < length:  # preadv may return short reads near the end or on signals
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got <= 0:
                break
            done += got
        return done


def analyze(read: Reader, size: int, since: float | None, view: Buffer | None = None,
            progress: Progress | None = None, workers: int | None = None) -> dict[str, Any]:
    """Summarise the window (`since` seconds before the newest entry; None = whole file).

    `read(offset, n)` serves the probes and the scan (positioned reads: forked workers share it).
    A range above PARALLEL_MIN is split between `workers` processes (default: the usable CPUs).
    `progress(done, total)` is called after each chunk the calling process scans. `view` is accepted
    for compatibility and unused: chunks read with pread are faster to count than mapped pages.
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
    pos = offset
    if offset > hole:
        head = counter(offset, min(size - offset, PROBE_BYTES))
        cut = head.find(b"\n")
        pos = offset + (cut + 1 if cut >= 0 else len(head))
    count = _workers() if workers is None else max(1, workers)
    if count > 1 and size - pos >= PARALLEL_MIN and hasattr(os, "fork"):
        stats = scan_parallel(counter, pos, size, start, count, progress)
    else:
        stats = scan_range(counter, pos, size, start, progress=progress)
    stats.nul_bytes += hole
    return {
        "size": size, "offset": offset, "newest": newest, "oldest": oldest, "start": start,
        "bytes_read": counter.bytes_read, "bytes_scanned": stats.bytes_scanned,
        "delete_lines": stats.delete_lines, "unparsed": stats.unparsed, "nul_bytes": stats.nul_bytes,
        "groups": stats.to_json(), "registry_lines": stats.delete_lines > 0 or registry_lines(counter, size),
        "long_lines": stats.long_lines,
    }


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def scan_range(read: Reader, pos: int, end: int, start: float | None, past_start: bool = False,
               progress: Progress | None = None, total: int | None = None) -> Stats:
    """Scan the complete lines of [pos, end) (pos is a line start) in CHUNK-sized positioned reads."""
    stats = Stats()
    stats.past_start = past_start
    first, total = pos, total or end - pos
    into = getattr(read, "read_into", None)
    buf = bytearray(min(CHUNK, end - pos)) if into is not None else None
    while pos < end:
        if into is not None and buf is not None:  # reuse one buffer: no page faults per chunk
            got = into(buf, pos, min(CHUNK, end - pos))
            data: Buffer = buf
        else:
            data = read(pos, min(CHUNK, end - pos))
            got = len(data)
        if not got:
            break
        stop = got
        if pos + stop < end:
            stop = data.rfind(b"\n", 0, got) + 1
            if stop == 0:  # no newline in a whole chunk: an over-long line, skipped to its end and counted
                stats.long_lines += 1
                pos = _after_next_newline(read, pos + got, end)
                continue
        stats.scan(data, 0, stop, start)
        pos += stop
        if progress is not None:
            progress(min(total, (pos - first) * total // max(end - first, 1)), total)
    return stats


def _after_next_newline(read: Reader, pos: int, end: int) -> int:
    """The offset after the next newline at or after `pos` (or `end`): one pass, CHUNK by CHUNK."""
    while pos < end:
        data = read(pos, min(CHUNK, end - pos))
        if not data:
            return end
        newline = bytes(data).find(b"\n")
        if newline >= 0:
            return pos + newline + 1
        pos += len(data)
    return end


def split_points(read: Reader, pos: int, end: int, parts: int) -> list[int]:
    """`parts + 1` offsets from pos to end, each inner one moved to the start of the next line."""
    points = [pos]
    for k in range(1, parts):
        at = pos + (end - pos) * k // parts
        while at < end:
            buf = read(at, PROBE_BYTES)
            newline = buf.find(b"\n")
            if newline >= 0:
                at += newline + 1
                break
            if not buf:
                at = end
            at += len(buf)
        points.append(max(min(at, end), points[-1]))
    points.append(end)
    return points


def scan_parallel(read: Counter, pos: int, end: int, start: float | None, workers: int,
                  progress: Progress | None = None) -> Stats:
    """Split [pos, end) at line boundaries; forked workers scan the tail ranges, this process the first.

    Each worker sends its Stats back as JSON through a pipe and exits with os._exit (nothing of the
    parent runs in it). Ranges after the first start past the window start (the binary search put
    `pos` there), so only the first one looks at timestamps. A worker that fails is re-scanned here.
    """
    points = split_points(read, pos, end, workers)
    children: list[tuple[int, int, int, int]] = []  # pid, read fd, range start, range end
    try:
        for a, b in [(points[i], points[i + 1]) for i in range(1, len(points) - 1)]:  # (3.7: no pairwise)
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    os.close(rfd)
                    stats = scan_range(read.read_fn, a, b, start, past_start=True)
                    payload = json.dumps(stats.dump()).encode()
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(wfd, view):]
                    code = 0
                finally:
                    os._exit(code)
            os.close(wfd)
            children.append((pid, rfd, a, b))
        stats = scan_range(read, points[0], points[1], start, progress=progress, total=end - pos)
        for pid, rfd, a, b in children:
            chunks = []
            while True:
                data = os.read(rfd, 1 << 20)
                if not data:
                    break
                chunks.append(data)
            os.close(rfd)
            _, status = os.waitpid(pid, 0)
            if status == 0 and chunks:
                part = Stats.load(json.loads(b"".join(chunks)))
                read.bytes_read += part.bytes_scanned
            else:
                part = scan_range(read, a, b, start, past_start=True)
            stats.merge(part)
        children = []
        if progress is not None:
            progress(end - pos, end - pos)
        return stats
    finally:
        for pid, rfd, _a, _b in children:  # interrupted: no worker outlives the scan
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(rfd)
            except OSError:
                pass


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


def analyze_path(path: str, since: float | None, progress: Progress | None = None,
                 workers: int | None = None) -> dict[str, Any]:
    """analyze() on a local file with positioned reads, plus the filesystem's free space."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError("not a regular file: " + path)
        size = info.st_size
        result = analyze(FileReader(fd), size, since, progress=progress, workers=workers)
    finally:
        os.close(fd)
    vfs = os.statvfs(path)
    result["disk_free_bytes"] = vfs.f_bavail * vfs.f_frsize
    result["path"] = path
    result["now"] = time.time()  # this host's clock: a loop is active relative to it
    result["mtime"] = info.st_mtime  # an hour without a write: a capture, read as of its newest entry
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


PROGRESS_EVERY = 0.5  # seconds between progress lines of a remote scan


def progress_lines(every: float = PROGRESS_EVERY, out: Any = None) -> Progress:
    """A callback that writes `{"progress": [done, total]}` lines, at most one per `every` seconds."""
    stream = out or sys.stdout
    last = [time.monotonic()]

    def tick(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every and done < total:
            last[0] = now
            stream.write(json.dumps({"progress": [int(done), int(total)]}) + "\n")
            stream.flush()

    return tick


def main(argv: list[str]) -> int:
    """`python3 - PATH SINCE_SECONDS|all [progress [SECONDS]]`: one JSON document, the last line on stdout
    (exit 2 on bad path); with `progress`, `{"progress": [done, total]}` lines before it, one per SECONDS."""
    exit_when_orphaned()
    try:
        since = None if argv[1] == "all" else float(argv[1])
        every = float(argv[3]) if len(argv) > 3 else PROGRESS_EVERY
        out = analyze_path(argv[0], since, progress=progress_lines(every) if argv[2:3] == ["progress"] else None)
    except (OSError, IndexError, ValueError) as exc:
        sys.stdout.write(json.dumps({"error": str(exc)}) + "\n")
        return 2
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
