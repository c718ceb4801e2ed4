"""Running the bundled `stub/stubctl.sh` on the registry host, and reading what it prints.

Deploy-specific work (nginx -t, start, stop, the watcher) lives in that fixed script, run as
`sh -c SCRIPT stubctl SUBCOMMAND ARGS...`, so input only ever travels as positional arguments.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence

from glcleanup.stub.render import stub_file
from glcleanup.transport import CommandResult, Host
from glcleanup.transport.sh import run_script

STUBCTL = "stubctl.sh"


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


__all__ = ["deploy_word", "parse_status_lines", "quote_argv", "sh_check", "stubctl", "tail_text"]
