"""The CLI on a pseudo-terminal: the only place its questions are asked (pipes and JSON never are)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time


def on_a_terminal(argv: list[str], prompt: bytes, answer: str, env: dict[str, str] | None = None,
                  timeout: float = 60.0) -> tuple[int, str]:
    """Run the CLI on a pty, answer its question, return (exit code, everything it printed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "glcleanup", *argv], stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True, env=env)
    os.close(slave)
    seen, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and prompt in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return rc, seen.decode(errors="replace").replace("\r\n", "\n")
