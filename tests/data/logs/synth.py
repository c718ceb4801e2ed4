"""Synthetic registry logs at a known loop rate, shaped like the incident's docker json-file lines.

Two quoting styles of the registry's logrus text, as registries really write them:
* `go1.11` (the write-up's build): `http.request.uri`, `vars.name` and the user agent quoted;
* `2.8.2` (Debian's Distribution 2.8.2, go1.19): logrus quotes a value only when it holds a character
  outside `[A-Za-z0-9-._/@^+]`, so `http.request.uri=/v2/user/repo/manifests/latest`,
  `vars.name=user/repo` and `http.request.useragent=GitLab/17.3.5` are bare (a digest URI, with its
  `:`, stays quoted).

A one-minute block of lines is rendered once with placeholders for the minute, then repeated with
only the minute replaced (bytes.replace), so multi-GB files take seconds to write.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

UTC_MIN = b"@@UTCMIN@@"  # 2024-10-27T03:25 (docker's own time, UTC)
LOC_MIN = b"@@LOCMIN@@"  # 2024-10-27T06:25 (the registry's +03:00 time)
CLF_MIN = b"@@CLFMIN@@"  # 27/Oct/2024:06:25
LOCAL = timedelta(hours=3)

_APP = ('{{"log":"time=\\"@@LOCMIN@@:{sec}+03:00\\" level=error msg=\\"response completed with error\\" '
        'auth.user.name= err.code=\\"digest invalid\\" err.message=\\"provided digest did not match uploaded '
        'content\\" go.version=go1.11.2 http.request.host=docker.domain.zone http.request.id={rid} '
        'http.request.method=DELETE http.request.remoteaddr=\\"172.18.0.74:{port}\\" '
        'http.request.uri=\\"/v2/{repo}/manifests/latest\\" http.request.useragent=\\"{ua}\\" '
        'http.response.contenttype=\\"application/json; charset=utf-8\\" http.response.duration=1.490791ms '
        'http.response.status=400 http.response.written=98 vars.name=\\"{repo}\\" vars.reference=latest \\n",'
        '"stream":"stderr","time":"@@UTCMIN@@:{sec}Z"}}\n')
# Distribution 2.8.2 (go1.19.8): the same line with logrus' "quote only when needed" rule.
_APP_282 = ('{{"log":"time=\\"@@LOCMIN@@:{sec}+03:00\\" level=error msg=\\"response completed with error\\" '
            'err.code=\\"digest invalid\\" err.message=\\"provided digest did not match uploaded content\\" '
            'go.version=go1.19.8 http.request.host=docker.domain.zone http.request.id={rid} '
            'http.request.method=DELETE http.request.remoteaddr=\\"172.18.0.74:{port}\\" '
            'http.request.uri=/v2/{repo}/manifests/latest http.request.useragent={ua} '
            'http.response.contenttype=\\"application/json; charset=utf-8\\" http.response.duration=1.490791ms '
            'http.response.status=400 http.response.written=98 vars.name={repo} vars.reference=latest \\n",'
            '"stream":"stderr","time":"@@UTCMIN@@:{sec}Z"}}\n')
_ACC = ('{{"log":"172.18.0.74 - - [@@CLFMIN@@:{isec} +0300] \\"{method} /v2/{repo}/{kind} HTTP/1.1\\" {status} '
        '{size} \\"\\" \\"{ua}\\"\\n","stream":"stdout","time":"@@UTCMIN@@:{sec}Z"}}\n')
_GET_282 = ('{{"log":"time=\\"@@LOCMIN@@:{sec}+03:00\\" level=info msg=\\"response completed\\" go.version=go1.19.8 '
            'http.request.host=docker.domain.zone http.request.id={rid} http.request.method=GET '
            'http.request.remoteaddr=\\"10.0.0.9:{port}\\" http.request.uri=\\"/v2/{repo}/blobs/sha256:{dig}\\" '
            'http.request.useragent=\\"docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0\\" '
            'http.response.contenttype=\\"application/octet-stream\\" http.response.duration=3.2ms '
            'http.response.status=200 http.response.written=2811 vars.digest=\\"sha256:{dig}\\" '
            'vars.name={repo} \\n","stream":"stderr","time":"@@UTCMIN@@:{sec}Z"}}\n')
STYLES = ("go1.11", "2.8.2")
_GET = ('{{"log":"time=\\"@@LOCMIN@@:{sec}+03:00\\" level=info msg=\\"response completed\\" go.version=go1.11.2 '
        'http.request.host=docker.domain.zone http.request.id={rid} http.request.method=GET '
        'http.request.remoteaddr=\\"10.0.0.9:{port}\\" http.request.uri=\\"/v2/{repo}/blobs/sha256:{dig}\\" '
        'http.request.useragent=\\"docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0\\" '
        'http.response.contenttype=\\"application/octet-stream\\" http.response.duration=3.2ms '
        'http.response.status=200 http.response.written=2811 vars.digest=\\"sha256:{dig}\\" '
        'vars.name=\\"{repo}\\" \\n","stream":"stderr","time":"@@UTCMIN@@:{sec}Z"}}\n')


def minute_block(per_second: float, repo: str = "user/repo", ua: str = "GitLab/17.3.5",
                 normal_per_second: float = 1.0, seed: int = 7, style: str = "go1.11") -> bytes:
    """One minute of log: the loop at `per_second` (app + access line each) plus normal pulls."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}")
    app, get = (_APP, _GET) if style == "go1.11" else (_APP_282, _GET_282)
    rnd = random.Random(seed)
    events: list[tuple[float, str]] = []
    n = round(per_second * 60)
    for i in range(n):
        events.append((i * 60.0 / n, "loop"))
    for _ in range(round(normal_per_second * 60)):
        events.append((rnd.uniform(0, 59.999), "pull"))
    events.sort()
    out: list[str] = []
    for when, kind in events:
        sec = f"{when:012.9f}"
        rid = f"{rnd.getrandbits(128):032x}"
        rid = f"{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:]}"
        port = rnd.randint(30000, 60000)
        if kind == "loop":
            out.append(app.format(sec=sec, rid=rid, port=port, repo=repo, ua=ua))
            out.append(_ACC.format(isec=sec[:2], sec=sec, method="DELETE", repo=repo, kind="manifests/latest",
                                   status=400, size=98, ua=ua))
        else:
            dig = f"{rnd.getrandbits(256):064x}"
            out.append(get.format(sec=sec, rid=rid, port=port, repo="team/app", dig=dig))
            out.append(_ACC.format(isec=sec[:2], sec=sec, method="GET", repo="team/app",
                                   kind=f"blobs/sha256:{dig}", status=200, size=2811,
                                   ua="docker/24.0.7 go/go1.20.10"))
    return "".join(out).encode()


def render_minute(block: bytes, minute: datetime) -> bytes:
    local = minute + LOCAL
    return (block.replace(UTC_MIN, minute.strftime("%Y-%m-%dT%H:%M").encode())
            .replace(LOC_MIN, local.strftime("%Y-%m-%dT%H:%M").encode())
            .replace(CLF_MIN, local.strftime("%d/%b/%Y:%H:%M").encode()))


def minutes(start: datetime, count: int) -> Iterator[datetime]:
    for i in range(count):
        yield start + timedelta(minutes=i)


def write_log(path: Path, *, target_bytes: int | None = None, n_minutes: int | None = None,
              per_second: float = 5.0, normal_per_second: float = 1.0,
              start: datetime = datetime(2024, 10, 27, 0, 0, tzinfo=UTC), style: str = "go1.11",
              access: bool = True) -> tuple[int, datetime]:
    """Write a docker json-file log; returns (minutes written, the last minute's start).

    `access=False` leaves out the access-log lines (a registry whose stdout is not captured).
    """
    block = minute_block(per_second, normal_per_second=normal_per_second, style=style)
    if not access:
        block = b"".join(line for line in block.splitlines(keepends=True) if b'"stream":"stdout"' not in line)
    if n_minutes is None:
        assert target_bytes is not None
        n_minutes = max(1, -(-target_bytes // len(block)))
    last = start
    with open(path, "wb", buffering=8 * 1024 * 1024) as fh:
        for minute in minutes(start, n_minutes):
            fh.write(render_minute(block, minute))
            last = minute
    return n_minutes, last
