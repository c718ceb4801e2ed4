"""Loopback helpers shared by every test: free ports, waiting for a listener or a condition."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from glcleanup.lab.registry import free_port, wait_port


def wait_until(cond: Callable[[], object], timeout: float = 10.0, step: float = 0.02) -> None:
    """Poll `cond` until it is truthy; fail the test if it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError("condition not met in time")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


__all__ = ["free_port", "stop_process", "wait_port", "wait_until"]
