"""The transport contract: what every way of reaching a shell provides, and host settings parsing.

A host runs an argv (never a shell string built from input). Scripts that need a pipeline go
through `transport.sh.run_script`, so input stays positional data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from glcleanup.errors import UsageError

DEFAULT_TIMEOUT = 300.0  # a real Rails boot takes 30-90 s; leave room


@dataclass(frozen=True)
class CommandResult:
    """What a command left behind: its output and exit status."""

    stdout: bytes
    stderr: bytes
    exit_code: int

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def error_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


OutputSink = Callable[[bytes], None]  # receives stdout chunks as they arrive


class Host(Protocol):
    """The transport contract: run an argv with optional stdin, move files, close."""

    name: str

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, timeout: float | None = DEFAULT_TIMEOUT,
        on_stdout: OutputSink | None = None,
    ) -> CommandResult: ...

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None: ...

    def get(self, path: str) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class HostSpec:
    """A parsed `--rails-host`/`--registry-host` value."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def is_local(self) -> bool:
        return self.host == "local"


_HOSTNAME = re.compile(r"\A[A-Za-z0-9_.\-]{1,253}\Z|\A\[[0-9A-Fa-f:.]{2,45}\]\Z")
_USER = re.compile(r"\A[A-Za-z0-9_.\-]{1,64}\Z")


def parse_host(spec: str) -> HostSpec:
    """`local` or `[ssh://][user@]host[:port]`; anything else is a usage error."""
    text = spec.strip()
    if text == "local":
        return HostSpec("local")
    if text.startswith("ssh://"):
        text = text[len("ssh://") :]
    user: str | None = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
        if not _USER.match(user):
            raise UsageError(f"invalid user in host {spec!r}")
    port: int | None = None
    bracket = re.match(r"\A\[([^\]]+)\](?::(\d{1,5}))?\Z", text)
    if bracket:
        text, port_text = f"[{bracket.group(1)}]", bracket.group(2)
    elif text.count(":") == 1:
        text, port_text = text.split(":")
    else:
        port_text = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"invalid port in host {spec!r}")
        port = int(port_text)
    if not _HOSTNAME.match(text) or text.startswith("-"):
        raise UsageError(f"invalid host {spec!r}: expected 'local' or [ssh://][user@]host[:port]")
    return HostSpec(text.strip("[]"), user, port)


