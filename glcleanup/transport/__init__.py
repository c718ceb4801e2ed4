"""How glcleanup reaches a shell: the local machine or an SSH host (paramiko).

`base` is the contract every host provides, `local` and `ssh` the two ways, and `sh` the one helper
that runs a fixed POSIX script with its input as positional arguments.
"""

from __future__ import annotations

from glcleanup.transport.base import DEFAULT_TIMEOUT, CommandResult, Host, HostSpec, OutputSink, parse_host
from glcleanup.transport.local import LocalHost
from glcleanup.transport.ssh import SSHHost, SSHOptions, fingerprint


def open_host(spec: str, options: SSHOptions | None = None) -> Host:
    """Turn a host setting into a connected-on-demand Host."""
    parsed = parse_host(spec)
    if parsed.is_local:
        return LocalHost()
    return SSHHost(parsed, options)



__all__ = [
    "DEFAULT_TIMEOUT",
    "CommandResult",
    "Host",
    "HostSpec",
    "LocalHost",
    "OutputSink",
    "SSHHost",
    "SSHOptions",
    "fingerprint",
    "open_host",
    "parse_host",
]
