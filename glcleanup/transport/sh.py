"""The one way glcleanup runs a pipeline on a host: a fixed POSIX script, input as positional words.

`sh -c SCRIPT NAME ARG...` keeps every argument out of the script's source: the script reads "$1",
"$2", ... and nothing a user typed is ever parsed as shell.
"""

from __future__ import annotations

from glcleanup.transport.base import DEFAULT_TIMEOUT, CommandResult, Host, OutputSink

FILE_SIZE = 'test -r "$1" || { echo "cannot read $1" >&2; exit 2; }; wc -c < "$1"'


def script_argv(script: str, *args: str, name: str = "sh") -> list[str]:
    """The argv that runs `script` with `args` as $1, $2, ... (`name` is $0, shown in errors)."""
    return ["sh", "-c", script, name, *args]


def run_script(host: Host, script: str, *args: str, name: str = "sh", stdin: bytes | None = None,
               timeout: float | None = DEFAULT_TIMEOUT, on_stdout: OutputSink | None = None) -> CommandResult:
    """Run a fixed script on `host`; `args` are data."""
    return host.run(script_argv(script, *args, name=name), stdin=stdin, timeout=timeout, on_stdout=on_stdout)


def file_size(host: Host, path: str, timeout: float = 60.0) -> int | None:
    """Size in bytes of a readable file on `host`, or None when it cannot be read."""
    result = run_script(host, FILE_SIZE, path, timeout=timeout)
    text = result.text.strip()
    return int(text) if result.exit_code == 0 and text.isdigit() else None
