"""SSH servers on loopback for tests: an in-process asyncssh server and a real OpenSSH sshd.

Both run real commands, so the runner, quoting and stdin travel exactly as in production.
Each writes a known_hosts file with its host key so the client verifies it (no auto-accept).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from tests.support.net import free_port, stop_process, wait_port


class _ForwardingServer(asyncssh.SSHServer):  # type: ignore[misc]
    """Allows direct-tcpip, as an sshd used as a ProxyJump bastion does."""

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return True


class AsyncSSHServer:
    """asyncssh in a thread: key auth for any user, runs `/bin/sh -c CMD` with streamed stdio."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None,
                 on_command: Callable[[str], None] | None = None) -> None:
        self.workdir = workdir
        self.env = {**os.environ, **(env or {})}
        self.on_command = on_command
        self.commands: list[str] = []
        self.port = 0
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.key_file = workdir / "id_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None
        self._children: set[asyncio.subprocess.Process] = set()

    def start(self) -> AsyncSSHServer:
        self.key_file.write_bytes(self.client_key.export_private_key("openssh"))
        self.key_file.chmod(0o600)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        line = self.host_key.export_public_key("openssh").decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {line}\n")
        return self

    async def _start(self) -> None:
        self._server = await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                self.client_key.export_public_key("openssh").decode()),
            process_factory=self._process, sftp_factory=True, allow_scp=False, encoding=None,
            server_factory=_ForwardingServer,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _process(self, proc: Any) -> None:
        cmd = proc.command or ""
        self.commands.append(cmd)
        if self.on_command:
            self.on_command(cmd)
        child = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", cmd, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=str(self.workdir), start_new_session=True)
        self._children.add(child)

        async def pump_in() -> None:
            assert child.stdin is not None
            try:
                while data := await proc.stdin.read(65536):
                    child.stdin.write(data)
                    await child.stdin.drain()
            except (BrokenPipeError, ConnectionResetError, asyncssh.Error):
                pass
            child.stdin.close()

        async def pump_out(src: Any, dst: Any) -> None:
            while data := await src.read(65536):
                dst.write(data)  # bytes both ways: binary output (gzip) must survive

        feeder = asyncio.ensure_future(pump_in())
        try:
            await asyncio.gather(pump_out(child.stdout, proc.stdout), pump_out(child.stderr, proc.stderr))
            rc = await child.wait()
        finally:
            feeder.cancel()
            self._children.discard(child)
        proc.exit(rc)

    def drop_connections(self) -> None:
        """Cut every open session and kill what it runs (a dropped link)."""
        for child in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # the shell and whatever it started

    def stop(self) -> None:
        async def _close() -> None:
            self._server.close()
            await self._server.wait_closed()

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
        self.drop_connections()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class OpenSSHServer:
    """A throwaway real sshd (root only): login shell, PATH and quoting as on a real host."""

    def __init__(self, workdir: Path, set_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.set_env = set_env or {}
        self.port = free_port()
        self.key_file = workdir / "id_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return os.geteuid() == 0 and Path("/usr/sbin/sshd").exists() and shutil.which("ssh-keygen") is not None

    def start(self) -> OpenSSHServer:
        d = self.workdir
        host_key = d / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key_file)], check=True)
        (d / "authorized_keys").write_text(Path(f"{self.key_file}.pub").read_text())
        setenv = " ".join(f'"{k}={v}"' for k, v in self.set_env.items())
        config = [
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {d}/sshd.pid",
            f"AuthorizedKeysFile {d}/authorized_keys", "StrictModes no", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "LogLevel ERROR",
        ]
        if setenv:
            config.append(f"SetEnv {setenv}")
        (d / "sshd_config").write_text("\n".join(config) + "\n")
        Path("/run/sshd").mkdir(exist_ok=True)
        subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(d / "sshd_config")], check=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "wb"))  # noqa: SIM115
        wait_port(self.port, proc=self.proc)
        pub = Path(f"{host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
