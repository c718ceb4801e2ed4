"""How glcleanup reaches a shell: the local machine or an SSH host (paramiko).

A host runs an argv (never a shell string built from input): over SSH the words are
quoted with `shlex.join` for the remote login shell. Scripts that need a pipeline use
`run(["sh", "-c", FIXED_SCRIPT, "sh", arg1, ...])` so input stays positional data.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import paramiko

from glcleanup.errors import AuthError, ConnectError, GlcleanupError, HostKeyError, UsageError

DEFAULT_TIMEOUT = 300.0  # a real Rails boot takes 30-90 s; leave room


@dataclass(frozen=True)
class CommandResult:
    """What a command left behind: its output and exit status."""

    stdout: bytes
    stderr: bytes
    exit_code: int

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def error_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


OutputSink = Callable[[bytes], None]  # receives stdout chunks as they arrive


class Host(Protocol):
    """The transport contract: run an argv with optional stdin, move files, close."""

    name: str

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, timeout: float | None = DEFAULT_TIMEOUT,
        on_stdout: OutputSink | None = None,
    ) -> CommandResult: ...

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None: ...

    def get(self, path: str) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class HostSpec:
    """A parsed `--rails-host`/`--registry-host` value."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def is_local(self) -> bool:
        return self.host == "local"


_HOSTNAME = re.compile(r"\A[A-Za-z0-9_.\-]{1,253}\Z|\A\[[0-9A-Fa-f:.]{2,45}\]\Z")
_USER = re.compile(r"\A[A-Za-z0-9_.\-]{1,64}\Z")


def parse_host(spec: str) -> HostSpec:
    """`local` or `[ssh://][user@]host[:port]`; anything else is a usage error."""
    text = spec.strip()
    if text == "local":
        return HostSpec("local")
    if text.startswith("ssh://"):
        text = text[len("ssh://") :]
    user: str | None = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
        if not _USER.match(user):
            raise UsageError(f"invalid user in host {spec!r}")
    port: int | None = None
    bracket = re.match(r"\A\[([^\]]+)\](?::(\d{1,5}))?\Z", text)
    if bracket:
        text, port_text = f"[{bracket.group(1)}]", bracket.group(2)
    elif text.count(":") == 1:
        text, port_text = text.split(":")
    else:
        port_text = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"invalid port in host {spec!r}")
        port = int(port_text)
    if not _HOSTNAME.match(text) or text.startswith("-"):
        raise UsageError(f"invalid host {spec!r}: expected 'local' or [ssh://][user@]host[:port]")
    return HostSpec(text.strip("[]"), user, port)


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


def _run_streaming(argv: list[str], stdin: bytes, timeout: float | None, on_stdout: OutputSink) -> CommandResult:
    """subprocess with stdout handed over as it arrives (journals are written before changes land)."""
    import threading

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


def open_host(spec: str, options: SSHOptions | None = None) -> Host:
    """Turn a host setting into a connected-on-demand Host."""
    parsed = parse_host(spec)
    if parsed.is_local:
        return LocalHost()
    return SSHHost(parsed, options)


__all__ = [
    "CommandResult",
    "GlcleanupError",
    "Host",
    "HostSpec",
    "LocalHost",
    "SSHHost",
    "SSHOptions",
    "fingerprint",
    "open_host",
    "parse_host",
]
