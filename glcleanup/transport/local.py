"""The local machine as a host: subprocess, also for `docker exec` / `kubectl exec` runner prefixes."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from glcleanup.errors import ConnectError
from glcleanup.transport.base import DEFAULT_TIMEOUT, CommandResult, OutputSink


class LocalHost:
    """Runs argv with subprocess on this machine (also covers `docker exec`/`kubectl exec` runners)."""

    name = "local"

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, timeout: float | None = DEFAULT_TIMEOUT,
        on_stdout: OutputSink | None = None,
    ) -> CommandResult:
        if on_stdout is None:
            try:
                proc = subprocess.run(list(argv), input=stdin or b"", capture_output=True, timeout=timeout)
            except FileNotFoundError as exc:
                raise ConnectError(f"command not found on local host: {argv[0]}") from exc
            except subprocess.TimeoutExpired as exc:
                raise ConnectError(f"local command timed out after {timeout:.0f} s: {argv[0]}") from exc
            return CommandResult(proc.stdout, proc.stderr, proc.returncode)
        return _run_streaming(list(argv), stdin or b"", timeout, on_stdout)

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        target = Path(path)
        tmp = target.with_name(f".{target.name}.glcleanup-tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(target)

    def get(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def close(self) -> None:
        return None



def _run_streaming(argv: list[str], stdin: bytes, timeout: float | None, on_stdout: OutputSink) -> CommandResult:
    """subprocess with stdout handed over as it arrives (journals are written before changes land)."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise ConnectError(f"command not found on local host: {argv[0]}") from exc
    err = bytearray()
    out = bytearray()

    def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass

    def collect_err() -> None:
        assert proc.stderr is not None
        err.extend(proc.stderr.read())

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=collect_err, daemon=True)]
    for thread in threads:
        thread.start()
    assert proc.stdout is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    stream = proc.stdout
    while chunk := stream.read1(65536):  # type: ignore[attr-defined]
        out += chunk
        try:
            on_stdout(chunk)
        except BaseException:
            proc.kill()  # the caller could not act on what it was told (e.g. save a journal): stop the script
            proc.wait()
            raise
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            raise ConnectError(f"local command timed out after {timeout:.0f} s: {argv[0]}")
    rc = proc.wait()
    for thread in threads:
        thread.join(5)
    return CommandResult(bytes(out), bytes(err), rc)


