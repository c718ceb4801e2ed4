"""One stop-loop or undo at a time per GitLab project, from this machine.

An flock on `$XDG_STATE_HOME/glcleanup/locks/<hash of rails host + project>.lock`: the kernel
drops it when the holder dies, so a crashed run never leaves a stale lock behind. The file
holds who has it (pid, command, since) for the refusal message.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from glcleanup.errors import LockedError
from glcleanup.journal.store import now_iso
from glcleanup.paths import lock_dir


def lock_path(rails_host: str, project: str) -> Path:
    key = f"{rails_host.strip().lower()}\n{project.strip().lower()}".encode()
    return lock_dir() / f"{hashlib.sha256(key).hexdigest()[:32]}.lock"


@contextlib.contextmanager
def project_lock(rails_host: str, project: str, command: str) -> Iterator[Path]:
    """Hold the lock for the block, or raise LockedError (exit 3) when another run has it."""
    path = lock_path(rails_host, project)
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
