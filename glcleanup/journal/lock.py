"""One stop-loop or undo at a time per GitLab project, from this machine.

An flock on `$XDG_STATE_HOME/glcleanup/locks/<hash of database identity + project>.lock`: the kernel
drops it when the holder dies, so a crashed run never leaves a stale lock behind. The file
holds who has it (pid, command, since) for the refusal message.

The identity is the machine the runner runs on (`/etc/machine-id`, read through the same transport
before the runner boots), not the host string: `local` and `root@127.0.0.1` reach one database and
take one lock. Two GitLab containers on one machine share a lock: too careful, never too little.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from glcleanup.errors import GlcleanupError, LockedError
from glcleanup.journal.store import now_iso
from glcleanup.paths import lock_dir
from glcleanup.transport import Host
from glcleanup.transport.sh import run_script

# Fixed script: what identifies the machine (and so the database behind its runner).
IDENTITY_SH = ('cat /etc/machine-id 2>/dev/null || cat /var/lib/dbus/machine-id 2>/dev/null '
               '|| { hostname; cat /proc/sys/kernel/random/boot_id; } 2>/dev/null')


def database_key(host: Host, fallback: str) -> str:
    """The runner machine's identity (one cheap command, no runner boot); `fallback` when it cannot tell."""
    try:
        result = run_script(host, IDENTITY_SH, name="glcleanup-identity", timeout=60)
    except GlcleanupError:
        return f"host:{fallback}"
    text = " ".join(result.text.split())[:200]
    return f"machine:{text}" if result.exit_code == 0 and text else f"host:{fallback}"


def lock_path(rails_host: str, project: str) -> Path:
    key = f"{rails_host.strip().lower()}\n{project.strip().lower()}".encode()
    return lock_dir() / f"{hashlib.sha256(key).hexdigest()[:32]}.lock"


@contextlib.contextmanager
def project_lock(rails_host: str, project: str, command: str, key: str | None = None) -> Iterator[Path]:
    """Hold the lock for the block, or raise LockedError (exit 3) when another run has it.

    `key` (see database_key) decides the lock; `rails_host` is only shown in the refusal."""
    path = lock_path(key or rails_host, project)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise LockedError(
                f"another glcleanup {holder.get('command', 'run')} is working on {holder.get('project', project)} "
                f"via {holder.get('rails_host', rails_host)} "
                f"(pid {holder.get('pid', '?')}, since {holder.get('since', '?')}); wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command, "project": project, "rails_host": rails_host,
                                  "since": now_iso()}).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing releases the flock


def _holder(fd: int) -> dict[str, str]:
    try:
        loaded = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
