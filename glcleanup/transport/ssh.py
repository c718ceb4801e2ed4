"""An SSH host through paramiko: host keys verified against known_hosts, ~/.ssh/config honoured.

Over SSH the argv words are quoted with `shlex.join` for the remote login shell.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from glcleanup.errors import AuthError, ConnectError, HostKeyError
from glcleanup.transport.base import DEFAULT_TIMEOUT, CommandResult, HostSpec, OutputSink, parse_host


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint, as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _VerifyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown keys with the fingerprint and the exact line to add."""

    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"unknown SSH host key for {hostname} ({key.get_name()} {fingerprint(key)}); "
            f"check it, then accept it with: ssh-keyscan -p PORT HOST >> {self.known_hosts}"
        )


@dataclass
class SSHOptions:
    """What decides how to log in: flags first, then ~/.ssh/config, then paramiko defaults."""

    key_file: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None
    connect_timeout: float = 15.0
    extra_keys: list[str] = field(default_factory=list)


class SSHHost:
    """A paramiko connection that verifies host keys and honours ~/.ssh/config."""

    def __init__(self, spec: HostSpec, options: SSHOptions | None = None) -> None:
        self.spec = spec
        self.options = options or SSHOptions()
        self.name = spec.host
        self._client: paramiko.SSHClient | None = None
        self._jump: paramiko.SSHClient | None = None

    # -- connection -----------------------------------------------------------------
    def _config_for(self, alias: str) -> dict[str, object]:
        path = Path(self.options.ssh_config or os.path.expanduser("~/.ssh/config"))
        if not path.is_file():
            return {"hostname": alias}
        conf = paramiko.SSHConfig.from_path(str(path))
        return dict(conf.lookup(alias))

    def _connect_client(self, alias: str, user: str | None, port: int | None,
                        sock: paramiko.Channel | None = None) -> paramiko.SSHClient:
        conf = self._config_for(alias)
        hostname = str(conf.get("hostname", alias))
        port = port or int(str(conf.get("port", 22)))
        user = user or (str(conf["user"]) if "user" in conf else None) or os.environ.get("USER") or "root"
        known_hosts = os.path.expanduser(self.options.known_hosts or "~/.ssh/known_hosts")
        client = paramiko.SSHClient()
        if os.path.isfile(known_hosts):
            try:
                client.load_host_keys(known_hosts)
            except (OSError, paramiko.SSHException) as exc:
                raise HostKeyError(f"cannot read known_hosts file {known_hosts}: {exc}") from exc
        client.set_missing_host_key_policy(_VerifyPolicy(known_hosts))
        key_files: list[str] = []
        if self.options.key_file:
            key_files.append(os.path.expanduser(self.options.key_file))
        identity = conf.get("identityfile")
        if isinstance(identity, list):
            key_files += [os.path.expanduser(str(k)) for k in identity if os.path.isfile(os.path.expanduser(str(k)))]
        explicit = bool(self.options.key_file)
        target = _known_hosts_name(hostname, port)
        try:
            client.connect(
                hostname,
                port=port,
                username=user,
                key_filename=key_files or None,  # type: ignore[arg-type]  # paramiko accepts a list
                look_for_keys=not explicit,
                allow_agent=not explicit,
                timeout=self.options.connect_timeout,
                banner_timeout=self.options.connect_timeout,
                auth_timeout=self.options.connect_timeout,
                sock=sock,
            )
        except HostKeyError:
            raise
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"SSH host key for {target} CHANGED: got {exc.key.get_name()} {fingerprint(exc.key)}, "
                f"known_hosts has {fingerprint(exc.expected_key)}. Refusing to connect; if the change is "
                f"expected, remove the old line with: ssh-keygen -R '{target}' -f {known_hosts}"
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise AuthError(f"SSH authentication as {user} on {target} was refused: {exc}") from exc
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise ConnectError(f"cannot reach {target} over SSH: {exc}") from exc
        return client

    def _ensure(self) -> paramiko.SSHClient:
        if self._client is not None:
            return self._client
        conf = self._config_for(self.spec.host)
        sock = None
        jump = conf.get("proxyjump")
        if jump and str(jump).lower() != "none":
            jspec = parse_host(str(jump).split(",")[0])
            self._jump = self._connect_client(jspec.host, jspec.user, jspec.port)
            transport = self._jump.get_transport()
            assert transport is not None
            hostname = str(conf.get("hostname", self.spec.host))
            port = self.spec.port or int(str(conf.get("port", 22)))
            try:
                sock = transport.open_channel("direct-tcpip", (hostname, port), ("127.0.0.1", 0))
            except paramiko.SSHException as exc:
                raise ConnectError(f"ProxyJump {jump} cannot reach {hostname}:{port}: {exc}") from exc
        self._client = self._connect_client(self.spec.host, self.spec.user, self.spec.port, sock)
        return self._client

    # -- Host contract -------------------------------------------------------------------
    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, timeout: float | None = DEFAULT_TIMEOUT,
        on_stdout: OutputSink | None = None,
    ) -> CommandResult:
        client = self._ensure()
        command = shlex.join(argv)
        try:
            chan_in, chan_out, _chan_err = client.exec_command(command, timeout=timeout)
            channel = chan_out.channel
            if stdin:
                chan_in.write(stdin)
                chan_in.flush()
            channel.shutdown_write()
            out, err = _drain(channel, timeout, on_stdout)
            rc = channel.recv_exit_status()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self._client = None
            raise ConnectError(f"SSH connection to {self.name} failed while running {argv[0]}: {exc}") from exc
        if rc == -1:
            raise ConnectError(f"SSH connection to {self.name} closed before {argv[0]} finished")
        return CommandResult(out, err, rc)

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        client = self._ensure()
        tmp = f"{path}.glcleanup-tmp"
        try:
            with client.open_sftp() as sftp:
                with sftp.open(tmp, "wb") as fh:
                    fh.write(data)
                sftp.chmod(tmp, mode)
                sftp.posix_rename(tmp, path)
        except (OSError, paramiko.SSHException) as exc:
            raise ConnectError(f"cannot write {path} on {self.name}: {exc}") from exc

    def get(self, path: str) -> bytes:
        client = self._ensure()
        try:
            with client.open_sftp() as sftp, sftp.open(path, "rb") as fh:
                return bytes(fh.read())
        except (OSError, paramiko.SSHException) as exc:
            raise ConnectError(f"cannot read {path} on {self.name}: {exc}") from exc

    def close(self) -> None:
        for client in (self._client, self._jump):
            if client is not None:
                client.close()
        self._client = self._jump = None

    @property
    def bytes_received(self) -> int:
        """Bytes that crossed the connection inbound: how tests prove filtering was remote."""
        if self._client is None:
            return 0
        transport = self._client.get_transport()
        packetizer = getattr(transport, "packetizer", None)
        return int(getattr(packetizer, "_Packetizer__received_bytes", 0)) if packetizer else 0


def _drain(channel: paramiko.Channel, timeout: float | None,
           on_stdout: OutputSink | None = None) -> tuple[bytes, bytes]:
    """Read stdout and stderr together so neither pipe can fill and stall the remote."""
    out, err = bytearray(), bytearray()
    deadline = None if timeout is None else time.monotonic() + timeout
    channel.settimeout(1.0)
    while True:
        progressed = False
        if channel.recv_ready():
            chunk = channel.recv(65536)
            out += chunk
            if on_stdout is not None and chunk:
                try:
                    on_stdout(chunk)
                except BaseException:
                    channel.close()  # closing the session hangs up on the remote script
                    raise
            progressed = True
        if channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
            progressed = True
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            # drain what is left after exit
            while True:
                try:
                    chunk = channel.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                out += chunk
                if on_stdout is not None:
                    on_stdout(chunk)
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            break
        if channel.closed and not channel.recv_ready():
            break
        if not progressed:
            if deadline is not None and time.monotonic() > deadline:
                channel.close()
                raise ConnectError(f"remote command timed out after {timeout:.0f} s")
            time.sleep(0.005)
    return bytes(out), bytes(err)


