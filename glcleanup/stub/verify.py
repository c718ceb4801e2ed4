"""Proof that the stub answers as GitLab needs (design.md §8), checked with `curl` on the registry host:
the stub usually listens where only that host (and GitLab) can reach it, and the admin's laptop may not
route there.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from glcleanup.errors import ConnectError
from glcleanup.stub.control import sh_check, tail_text
from glcleanup.stub.render import VERIFY_AGENT, StubConfig
from glcleanup.transport import Host

_MARK = "<<<glcleanup-verify {code}>>>"


_MARK_RE = re.compile(r"\n<<<glcleanup-verify (\d{3})>>>\n")


@dataclass
class Answer:
    """One HTTP answer as curl saw it on the registry host."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass(frozen=True)
class Probe:
    """A request to send and what must come back."""

    method: str
    path: str
    status: tuple[int, ...]
    header: tuple[str, str] | None = None     # (name, substring that must appear)
    body_json: object | None = None
    body_contains: str | None = None
    base: str | None = None                    # another base URL (the plain-HTTP redirect port)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def probes_for(config: StubConfig) -> list[Probe]:
    """The answers `stub on` guarantees (design.md §8) as checks."""
    probes: list[Probe]
    if config.mode == "respond":
        api = ("Docker-Distribution-Api-Version", "registry/2.0")
        probes = [
            Probe("GET", "/v2/", (200,), api, body_json={}),
            Probe("GET", "/gitlab/v1/", (404,)),
            Probe("OPTIONS", "/v2/name/manifests/tag", (200,), ("Allow", "DELETE")),
            Probe("GET", "/v2/glcleanup/verify/tags/list", (200,), ("Content-Type", "application/json"),
                  body_json={"name": "glcleanup/verify", "tags": []}),
            Probe("DELETE", "/v2/glcleanup/verify/manifests/latest", (202,)),
            Probe("HEAD", "/v2/glcleanup/verify/manifests/latest", (404,)),
            Probe("GET", "/v2/glcleanup/verify/manifests/latest", (404,), body_contains="MANIFEST_UNKNOWN"),
            Probe("GET", "/glcleanup-verify", (404,)),
        ]
    else:
        probes = [
            Probe("OPTIONS", "/v2/name/manifests/tag", (404,)),
            # the upstream answered through the proxy (401 when the registry wants a token)
            Probe("GET", "/v2/", (200, 401), ("Docker-Distribution-Api-Version", "registry/2.0")),
        ]
    if config.http_port is not None:
        plain = f"http://{config.listen.connect_host}:{config.http_port}"
        suffix = "" if config.listen.port == 443 else f":{config.listen.port}"
        probes.append(Probe("GET", "/v2/", (308,), ("Location", f"{suffix}/v2/"), base=plain))
    return probes


def curl_argv(base: str, probes: Sequence[Probe], timeout: float = 10.0) -> list[str]:
    """One curl run for all probes (`--next` between them), each followed by a status marker."""
    argv = ["curl"]
    for i, probe in enumerate(probes):
        if i:
            argv.append("--next")
        argv += ["-sS", "-k", "--http1.1", "--max-time", f"{timeout:g}", "-A", VERIFY_AGENT,
                 "-w", "\n" + _MARK.replace("{code}", "%{http_code}") + "\n"]
        argv += ["-I"] if probe.method == "HEAD" else ["-i", "-X", probe.method]
        argv.append((probe.base or base) + probe.path)
    return argv


def parse_curl(output: str) -> list[Answer]:
    """Split curl's -i output at the markers into status, headers and body per request."""
    answers: list[Answer] = []
    pos = 0
    for m in _MARK_RE.finditer(output):
        chunk, pos = output[pos:m.start()], m.end()
        status = int(m.group(1))
        head, _, body = chunk.replace("\r\n", "\n").partition("\n\n")
        headers: dict[str, str] = {}
        for line in head.splitlines()[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        answers.append(Answer(status, headers, body))
    return answers


def check_answer(probe: Probe, answer: Answer) -> str | None:
    """None when the answer is what the stub promises, else what was wrong."""
    if answer.status not in probe.status:
        want = "/".join(str(s) for s in probe.status)
        return f"{probe.label}: got {answer.status or 'no answer'}, want {want}"
    if probe.header:
        name, needle = probe.header
        if needle not in answer.header(name):
            return f"{probe.label}: header {name} is {answer.header(name)!r}, want it to contain {needle!r}"
    if probe.body_json is not None:
        try:
            got = json.loads(answer.body)
        except ValueError:
            return f"{probe.label}: body is not JSON: {answer.body[:80]!r}"
        if got != probe.body_json:
            return f"{probe.label}: body {got!r}, want {probe.body_json!r}"
    if probe.body_contains and probe.body_contains not in answer.body:
        return f"{probe.label}: body lacks {probe.body_contains}: {answer.body[:80]!r}"
    return None


def verify(host: Host, config: StubConfig, timeout: float = 20.0) -> list[str]:
    """Ask the stub every promised question from the registry host; [] when all answers are right.

    Retries while nothing answers yet (a container takes a moment to bind)."""
    probes = probes_for(config)
    deadline = time.monotonic() + timeout
    while True:
        result = host.run(curl_argv(config.url, probes), timeout=timeout + 30)
        answers = parse_curl(result.text)
        if len(answers) != len(probes):
            problems = [f"curl gave {len(answers)} answers for {len(probes)} requests: {tail_text(result)}"]
        else:
            problems = [p for p in (check_answer(pr, a) for pr, a in zip(probes, answers, strict=True)) if p]
        nothing_yet = bool(answers) and all(a.status == 0 for a in answers)
        if not problems or not nothing_yet or time.monotonic() > deadline:
            return problems
        time.sleep(0.3)


_REGISTRY_PING = """
url=$1; tries=$2
i=0
while :; do
  h=$(curl -sS -k --max-time 5 -o /dev/null -D - "$url/v2/" 2>&1) && \
    printf '%s\\n' "$h" | grep -qi '^docker-distribution-api-version:' && { printf '%s\\n' "$h" | head -n 1; exit 0; }
  i=$((i + 1)); [ "$i" -ge "$tries" ] && { printf '%s\\n' "$h" | head -n 3; exit 1; }
  sleep 1
done
"""


def registry_answers(host: Host, url: str, tries: int = 20) -> tuple[bool, str]:
    """Does the real registry answer `GET /v2/` with Docker-Distribution-Api-Version (from its host)?"""
    try:
        result = sh_check(host, _REGISTRY_PING, url.rstrip("/"), str(tries), timeout=tries * 7 + 10)
    except ConnectError as exc:
        return False, str(exc)
    return result.exit_code == 0, result.text.strip()


__all__ = ["Answer", "Probe", "check_answer", "curl_argv", "parse_curl", "probes_for", "registry_answers", "verify"]
