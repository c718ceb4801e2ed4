"""Preflight on the registry host before the stub goes up: tools, certificate and key, directory, ports."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass

from glcleanup.errors import StubError
from glcleanup.stub.control import sh_check, stubctl, tail_text
from glcleanup.stub.render import Listen
from glcleanup.transport import Host

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


__all__ = [
    "Listener",
    "busy_ports",
    "check_cert_key",
    "check_dir",
    "compose_command",
    "conflicts",
    "missing_tools",
    "parse_listeners",
    "wait_ports_free",
]
