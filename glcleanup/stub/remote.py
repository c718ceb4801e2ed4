"""What the stub does on the registry host: every step is an argv through `Host.run`.

Deploy-specific work (nginx -t, start, stop, the watcher) lives in the fixed script `stubctl.sh`,
run as `sh -c SCRIPT stubctl SUBCOMMAND ARGS...`, so input only ever travels as positional
arguments. Verification runs `curl` on the registry host: the stub usually listens where only
that host (and GitLab) can reach it, and the admin's laptop may not route there.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from glcleanup.errors import ConnectError, StubError
from glcleanup.stub.render import VERIFY_AGENT, Listen, StubConfig, stub_file
from glcleanup.transport import CommandResult, Host
from glcleanup.transport.sh import run_script

STUBCTL = "stubctl.sh"
_MARK = "<<<glcleanup-verify {code}>>>"
_MARK_RE = re.compile(r"\n<<<glcleanup-verify (\d{3})>>>\n")


def deploy_word(deploy: str, compose_cmd: str | None) -> str:
    """stubctl's DEPLOY argument: nginx, compose (docker compose) or compose-v1 (docker-compose)."""
    if deploy == "nginx":
        return "nginx"
    return "compose-v1" if compose_cmd == "docker-compose" else "compose"


def stubctl(host: Host, *args: str, timeout: float = 120.0) -> CommandResult:
    """Run the bundled control script's subcommand on the host (script text fixed, args positional)."""
    return run_script(host, stub_file(STUBCTL), *args, name="stubctl", timeout=timeout)


def sh_check(host: Host, script: str, *args: str, timeout: float = 30.0) -> CommandResult:
    """A small FIXED shell snippet with positional args (for checks that need a pipe or a test)."""
    return run_script(host, script, *args, timeout=timeout)


def tail_text(result: CommandResult, lines: int = 4) -> str:
    """The last few lines of a command's output: enough to say why, short enough for one message."""
    text = [ln.strip() for ln in (result.error_text + "\n" + result.text).splitlines() if ln.strip()]
    return " | ".join(text[-lines:])[-600:] if text else f"exit status {result.exit_code}"


# --- preflight checks -------------------------------------------------------------------------------

_TOOLS = 'for t in "$@"; do command -v "$t" >/dev/null 2>&1 || ' \
         '{ [ -x "/usr/sbin/$t" ] || [ -x "/sbin/$t" ] || echo "$t"; }; done'


def missing_tools(host: Host, tools: Sequence[str]) -> list[str]:
    return sh_check(host, _TOOLS, *tools).text.split()


def compose_command(host: Host) -> str | None:
    """`docker compose` (v2 plugin) if it works on the host, else `docker-compose`, else None."""
    if host.run(["docker", "compose", "version"], timeout=30).exit_code == 0:
        return "docker compose"
    probe = sh_check(host, 'command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1')
    return "docker-compose" if probe.exit_code == 0 else None


_CERT_KEY = """
c=$1 k=$2
[ -r "$c" ] || { echo "certificate $c is not readable"; exit 1; }
[ -r "$k" ] || { echo "key $k is not readable"; exit 1; }
cp=$(openssl x509 -in "$c" -noout -pubkey 2>&1) || { echo "certificate $c: not a PEM certificate: $cp"; exit 1; }
kp=$(openssl pkey -in "$k" -pubout 2>&1) || { echo "key $k: not a PEM private key (or encrypted)"; exit 1; }
[ "$cp" = "$kp" ] || { echo "key $k does not match certificate $c"; exit 1; }
openssl x509 -in "$c" -noout -checkend 0 >/dev/null 2>&1 || echo "warning: certificate $c has expired"
exit 0
"""


def check_cert_key(host: Host, cert: str, key: str) -> list[str]:
    """Readable, PEM, and the key's public half is the certificate's; returns warnings."""
    result = sh_check(host, _CERT_KEY, cert, key)
    if result.exit_code != 0:
        raise StubError(f"TLS check on {host.name} failed: {result.text.strip() or tail_text(result)}")
    return [line[len("warning: "):] for line in result.text.splitlines() if line.startswith("warning: ")]


_DIR_CHECK = """
d=$1
if [ -e "$d" ]; then
  [ -d "$d" ] || { echo "$d exists and is not a directory"; exit 1; }
  [ -w "$d" ] || { echo "$d is not writable"; exit 1; }
  [ -L "$d" ] && { echo "$d is a symlink; give the real directory"; exit 1; }
  echo exists
else
  p=$(dirname "$d")
  while [ ! -e "$p" ]; do p=$(dirname "$p"); done
  [ -w "$p" ] || { echo "cannot create $d: $p is not writable"; exit 1; }
  echo creatable
fi
"""


def check_dir(host: Host, path: str) -> bool:
    """True when the dir exists already; StubError when it cannot be created or written."""
    result = sh_check(host, _DIR_CHECK, path)
    if result.exit_code != 0:
        raise StubError(f"--dir on {host.name}: {result.text.strip() or tail_text(result)}")
    return result.text.strip() == "exists"


@dataclass(frozen=True)
class Listener:
    address: str
    port: int


def parse_listeners(text: str) -> list[Listener]:
    """Local addresses from `ss -Hltn` or `netstat -ltn` output (4th column, ADDR:PORT)."""
    found: list[Listener] = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 4 or (cols[0] not in ("LISTEN",) and not cols[0].startswith("tcp")):
            continue
        local = cols[3]
        addr, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        addr = addr.strip("[]").split("%")[0]
        found.append(Listener(addr, int(port)))
    return found


def conflicts(listener: Listener, listen: Listen) -> bool:
    """Would binding `listen` fail because of `listener`? Same port and either is a wildcard or equal."""
    if listener.port != listen.port:
        return False
    if listener.address in ("*", "0.0.0.0", "::") or listen.wildcard:
        return True
    try:
        theirs = ipaddress.ip_address(listener.address)
        if isinstance(theirs, ipaddress.IPv6Address) and theirs.ipv4_mapped:
            theirs = theirs.ipv4_mapped
        return theirs == ipaddress.ip_address(listen.address)
    except ValueError:
        return False


def busy_ports(host: Host, listens: Sequence[Listen]) -> list[Listen] | None:
    """The subset of `listens` something already listens on; None when the host has no ss/netstat."""
    result = stubctl(host, "listeners", timeout=30)
    if result.exit_code != 0:
        return None
    listeners = parse_listeners(result.text)
    return [want for want in listens if any(conflicts(have, want) for have in listeners)]


def wait_ports_free(host: Host, listens: Sequence[Listen], timeout: float = 20.0) -> list[Listen]:
    """Poll until nothing listens on `listens` (after --stop-registry); returns what stayed busy."""
    deadline = time.monotonic() + timeout
    while True:
        busy = busy_ports(host, listens)
        if not busy or time.monotonic() > deadline:
            return busy or []
        time.sleep(0.2)


# --- verification over the network ---------------------------------------------------------------------

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
        argv += ["-sS", "-k", "--http1.1", "--max-time", f"{timeout:g}", "--max-filesize", "1048576",
                 "-A", VERIFY_AGENT, "-w", "\n" + _MARK.replace("{code}", "%{http_code}") + "\n"]
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
    if not re.match(r"\Ahttps?://[^\s]+\Z", url):  # curl must never read it as an option
        return False, f"not an http(s) URL: {url[:80]!r}"
    try:
        result = sh_check(host, _REGISTRY_PING, url.rstrip("/"), str(tries), timeout=tries * 7 + 10)
    except ConnectError as exc:
        return False, str(exc)
    return result.exit_code == 0, result.text.strip()


def parse_status_lines(text: str) -> tuple[dict[str, str], dict[str, object] | None, str | None]:
    """stubctl status output: key=value lines, then the state JSON after a marker."""
    values: dict[str, str] = {}
    state: dict[str, object] | None = None
    which: str | None = None
    head, sep, rest = text.partition("\n---")
    if text.startswith("---"):
        head, sep, rest = "", "-", text[3:]
    for line in head.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            values[key.strip()] = value
    if sep:
        marker, _, body = rest.partition("\n")
        which = marker.strip("-")
        try:
            loaded = json.loads(body)
            state = loaded if isinstance(loaded, dict) else None
        except ValueError:
            state = None
    return values, state, which


def quote_argv(argv: Sequence[str] | None) -> str:
    return shlex.join(argv) if argv else "-"


__all__ = [
    "Answer", "Listener", "Probe", "busy_ports", "check_answer", "check_cert_key", "check_dir", "compose_command",
    "conflicts", "curl_argv", "deploy_word", "missing_tools", "parse_curl", "parse_listeners",
    "parse_status_lines", "probes_for", "quote_argv", "registry_answers", "stubctl", "verify", "wait_ports_free",
]
