"""`stub on|off|status` for real: nginx, Distribution 2.8, SSH on loopback, faults, watcher, cycles.

The "registry being replaced" is a real `docker-registry` run the way an admin's service would be:
a start command that returns (backgrounded, pid file) and a stop command. Every process a test
starts is stopped by its pid at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.errors import ConnectError, StubError
from glcleanup.lab.registry import MT_MANIFEST, RegistryProcess, list_tags, push_image, render_config
from glcleanup.stub import deploy as stub_core
from glcleanup.stub.deploy import read_status, stub_off, stub_on
from glcleanup.stub.render import StubConfig, build_config
from glcleanup.transport import CommandResult, Host, LocalHost, OutputSink, SSHHost, SSHOptions, parse_host
from tests.support.net import free_port, wait_port, wait_until
from tests.support.ssh import AsyncSSHServer, OpenSSHServer
from tests.support.terminal import on_a_terminal

pytestmark = [
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx missing"),
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl missing"),
]


def wait_for(cond: Callable[[], object], timeout: float = 10.0) -> None:
    wait_until(cond, timeout, step=0.05)


# --- fixtures --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TLS:
    ca: str
    cert: str
    key: str
    other_key: str
    garbage: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost", "::1")
    other = ca.issue_cert("other.example")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(d / "key.pem"))
    with open(d / "cert.pem", "wb") as fh:
        for blob in leaf.cert_chain_pems:
            fh.write(blob.bytes())
    other.private_key_pem.write_to_path(str(d / "other-key.pem"))
    (d / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    return TLS(str(d / "ca.pem"), str(d / "cert.pem"), str(d / "key.pem"), str(d / "other-key.pem"),
               str(d / "garbage.pem"))


class ManagedRegistry:
    """A real registry behind admin-style commands: `start` returns at once, `stop` frees the port."""

    def __init__(self, root: Path, tls: TLS | None, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.tls = tls
        root.mkdir(parents=True, exist_ok=True)
        (root / "storage").mkdir(exist_ok=True)
        (root / "config.yml").write_text(render_config(root / "storage", self.port, True,
                                                       (tls.cert, tls.key) if tls else None, "text"))
        self.pid_file = root / "pid"
        start = root / "start.sh"
        start.write_text(f"#!/bin/sh\nnohup docker-registry serve {root}/config.yml >>{root}/registry.log 2>&1 "
                         f"</dev/null &\necho $! > {self.pid_file}\n")
        stop = root / "stop.sh"
        stop.write_text(f"#!/bin/sh\npid=$(cat {self.pid_file}) || exit 0\nkill \"$pid\" 2>/dev/null\n"
                        "while kill -0 \"$pid\" 2>/dev/null && [ -r /proc/$pid/cmdline ] && "
                        "grep -q registry /proc/$pid/cmdline; do sleep 0.05; done\nexit 0\n")
        start.chmod(0o755)
        stop.chmod(0o755)
        self.start_cmd = str(start)
        self.stop_cmd = str(stop)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        """Its pid is alive (not a zombie) and the port answers like a registry."""
        pid = self.pid()
        if pid is None or not _alive(pid):
            return False
        try:
            resp = requests.get(self.url + "/v2/", verify=self.tls.ca if self.tls else True, timeout=2)
        except requests.RequestException:
            return False
        return resp.headers.get("Docker-Distribution-Api-Version") == "registry/2.0"

    def start(self) -> ManagedRegistry:
        subprocess.run([self.start_cmd], check=True)
        wait_port(self.port)
        return self

    def kill(self) -> None:
        """Every registry started from this root, not only the last pid written (a retried start overwrites it)."""
        for line in processes_mentioning(f"{self.root}/config.yml"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":")[0]), signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def processes_mentioning(text: str) -> list[str]:
    """Live (non-zombie) processes whose command line or open files mention `text`.

    Open files catch nginx workers too: their title is just "nginx: worker process"."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        mentioned = text in cmdline
        if not mentioned:
            with contextlib.suppress(OSError):
                mentioned = any(text in os.readlink(fd) for fd in (proc / "fd").iterdir())
        if mentioned and _alive(int(proc.name)):
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], None]]]:
    """Teardown hooks run last-first: stop stubs and registries by pid even when a test failed."""
    hooks: list[Callable[[], None]] = []
    yield hooks
    for hook in reversed(hooks):
        with contextlib.suppress(Exception):
            hook()


def registry(root: Path, tls: TLS | None, cleanup: list[Callable[[], None]]) -> ManagedRegistry:
    reg = ManagedRegistry(root, tls).start()
    cleanup.append(reg.kill)
    return reg


def track_stub(directory: Path, cleanup: list[Callable[[], None]]) -> None:
    """Kill whatever nginx/watcher still runs from `directory` (a failed test must not leak)."""

    def kill() -> None:
        for line in processes_mentioning(str(directory)):
            pid = int(line.split(":")[0])
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:          # a daemonized nginx master leads its workers' group
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)

    cleanup.append(kill)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[AsyncSSHServer]:
    (tmp_path / "ssh").mkdir()
    server = AsyncSSHServer(tmp_path / "ssh").start()
    yield server
    server.stop()


def ssh_host(server: AsyncSSHServer | OpenSSHServer) -> SSHHost:
    return SSHHost(parse_host(f"root@127.0.0.1:{server.port}"),
                   SSHOptions(key_file=str(server.key_file), known_hosts=str(server.known_hosts)))


def session(tls: TLS) -> requests.Session:
    s = requests.Session()
    s.trust_env = False            # REQUESTS_CA_BUNDLE in the environment would override s.verify
    s.verify = tls.ca
    s.headers["User-Agent"] = "GitLab/17.3.5"
    return s


def respond_config(tmp_path: Path, reg: ManagedRegistry, tls: TLS, **kw: Any) -> StubConfig:
    values: dict[str, Any] = {"listen": f"127.0.0.1:{reg.port}", "cert": tls.cert, "key": tls.key,
                              "dir": str(tmp_path / "stub"), "stop_registry": reg.stop_cmd,
                              "start_registry": reg.start_cmd}
    values.update(kw)
    return build_config(**values)


# --- respond mode over SSH --------------------------------------------------------------------------

def check_respond_table(base: str, tls: TLS) -> None:
    """Every row of the respond table, over HTTPS with the test CA (design.md §8)."""
    s = session(tls)
    r = s.get(f"{base}/v2/")
    assert (r.status_code, r.json(), r.headers["Docker-Distribution-Api-Version"]) == (200, {}, "registry/2.0")
    assert s.get(f"{base}/gitlab/v1/").status_code == 404
    assert s.get(f"{base}/gitlab/v1/repositories/grp/app/tags/list/").status_code == 404
    for path in ("/v2/name/manifests/tag", "/v2/grp/app/manifests/latest", "/v2/grp/app/tags/list", "/v2/"):
        r = s.options(f"{base}{path}")
        assert r.status_code == 200, path
        assert r.headers["Allow"] == "GET, HEAD, PUT, DELETE"
    r = s.get(f"{base}/v2/grp/sub/app/tags/list")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"name": "grp/sub/app", "tags": []}
    assert s.get(f"{base}/v2/Bad%22Name/tags/list").status_code == 404      # never echoed into JSON
    for path in ("/v2/grp/app/manifests/latest", "/v2/grp/app/manifests/sha256:" + "0" * 64,
                 "/v2/grp/app/blobs/sha256:" + "1" * 64):
        r = s.delete(f"{base}{path}")
        assert (r.status_code, r.content) == (202, b""), path
    r = s.get(f"{base}/v2/grp/app/manifests/latest")
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert s.head(f"{base}/v2/grp/app/manifests/latest").status_code == 404
    assert s.put(f"{base}/v2/grp/app/manifests/latest", data=b"{}").status_code == 404
    assert s.get(f"{base}/nothing/here").status_code == 404
    assert s.post(f"{base}/v2/grp/app/blobs/uploads/").status_code == 404
    assert "Allow" not in s.get(f"{base}/v2/").headers


def test_respond_over_ssh_answers_every_row_and_restores(tmp_path: Path, tls: TLS, sshd: AsyncSSHServer,
                                                         cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    http_port = free_port()
    config = respond_config(tmp_path, reg, tls, http_port=str(http_port))
    track_stub(tmp_path / "stub", cleanup)
    host = ssh_host(sshd)
    try:
        started = time.monotonic()
        result = stub_on(host, config, apply=True, registry_url=reg.url)
        on_seconds = time.monotonic() - started
        assert result.applied
        assert not reg.running()
        base = f"https://127.0.0.1:{reg.port}"
        check_respond_table(base, tls)
        # plain HTTP redirects to the real TLS port and keeps the method
        r = requests.get(f"http://127.0.0.1:{http_port}/v2/", allow_redirects=False, timeout=5)
        assert (r.status_code, r.headers["Location"]) == (308, f"https://127.0.0.1:{reg.port}/v2/")
        r = requests.delete(f"http://127.0.0.1:{http_port}/v2/grp/app/manifests/v1", verify=tls.ca, timeout=5)
        assert r.status_code == 202
        status = read_status(host, config.dir).to_json()
        assert status["state"] == "on"
        assert (status["mode"], status["listen"], status["deploy"]) == ("respond", f"127.0.0.1:{reg.port}", "nginx")
        assert status["since"]
        assert status["confirmed"]
        assert status["pid"]
        assert Path(f"/proc/{status['pid']}").exists()
        assert status["requests"] >= 20
        assert status["deletes"] == 5            # the plain-port DELETE is logged at 308 and at 202
        assert status["last_delete"]["path"] == "/v2/grp/app/manifests/v1"
        assert status["last_delete"]["user_agent"] == "python-requests/" + requests.__version__
        access = (tmp_path / "stub" / "access.log").read_text()
        assert '"DELETE /v2/grp/app/manifests/latest HTTP/1.1" 202 0 "-" "GitLab/17.3.5"' in access
        state = json.loads((tmp_path / "stub" / "state.json").read_text())
        assert state["start_registry"] == [reg.start_cmd]
        assert state["stop_registry"] == [reg.stop_cmd]
        assert (state["since"], state["pid"], state["mode"]) == (status["since"], status["pid"], "respond")
        off = stub_off(host, config.dir, apply=True, registry_url=reg.url)
        assert off.applied
        assert off.registry_ok, off.registry_detail
        assert reg.running()
        again = stub_off(host, config.dir, apply=True, registry_url=reg.url)
        assert again.already_off
        assert read_status(host, config.dir).to_json()["state"] == "off"
        assert not processes_mentioning(str(tmp_path / "stub"))
    finally:
        host.close()
    assert on_seconds < 10


@pytest.mark.skipif(not OpenSSHServer.available(), reason="real sshd needs root and /usr/sbin/sshd")
def test_respond_over_real_sshd(tmp_path: Path, tls: TLS, cleanup: list[Callable[[], None]]) -> None:
    (tmp_path / "sshd").mkdir()
    server = OpenSSHServer(tmp_path / "sshd").start()
    cleanup.append(server.stop)
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls)
    track_stub(tmp_path / "stub", cleanup)
    host = ssh_host(server)
    try:
        stub_on(host, config, apply=True, registry_url=reg.url)
        check_respond_table(f"https://127.0.0.1:{reg.port}", tls)
        off = stub_off(host, config.dir, apply=True, registry_url=reg.url)
        assert off.registry_ok
    finally:
        host.close()
    assert reg.running()


# --- proxy mode in front of the real registry ------------------------------------------------------------

def test_proxy_forwards_pushes_pulls_and_digest_deletes(tmp_path: Path, tls: TLS,
                                                        cleanup: list[Callable[[], None]]) -> None:
    upstream = registry(tmp_path / "reg", None, cleanup)          # the real registry, moved to its own port
    port = free_port()
    config = build_config(mode="proxy", upstream=upstream.url, listen=f"127.0.0.1:{port}", cert=tls.cert,
                          key=tls.key, dir=str(tmp_path / "stub"))
    track_stub(tmp_path / "stub", cleanup)
    host = LocalHost()
    result = stub_on(host, config, apply=True)
    assert result.verified == ["OPTIONS /v2/name/manifests/tag -> 404", "GET /v2/ -> 200/401"]
    base = f"https://127.0.0.1:{port}"
    s = session(tls)
    assert s.options(f"{base}/v2/name/manifests/tag").status_code == 404          # the probe
    assert s.options(f"{base}/v2/grp/app/manifests/latest").status_code == 404
    assert s.get(f"{base}/v2/").headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    # a push through the proxy (monolithic blobs, 4 MB layer) ...
    digest = push_image(base, "grp/app", "latest", verify=tls.ca, payload=os.urandom(4 << 20))
    push_image(base, "grp/app", "keep", verify=tls.ca)
    assert sorted(list_tags(upstream.url, "grp/app")) == ["keep", "latest"]
    # ... and a chunked one: POST, PATCH with Transfer-Encoding: chunked, PUT; Location points at the proxy
    r = s.post(f"{base}/v2/grp/app/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["Location"]
    assert location.startswith(f"{base}/v2/grp/app/blobs/uploads/"), location
    data = os.urandom(3 << 20)
    r = s.patch(location, data=(data[i:i + 65536] for i in range(0, len(data), 65536)),
                headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    import hashlib

    blob = "sha256:" + hashlib.sha256(data).hexdigest()
    r = s.put(r.headers["Location"], params={"digest": blob})
    assert r.status_code == 201, r.text
    assert s.get(f"{base}/v2/grp/app/blobs/{blob}").content == data
    # a pull through the proxy
    r = s.get(f"{base}/v2/grp/app/manifests/latest", headers={"Accept": MT_MANIFEST})
    assert (r.status_code, r.headers["Docker-Content-Digest"]) == (200, digest)
    layer = r.json()["layers"][0]["digest"]
    assert len(s.get(f"{base}/v2/grp/app/blobs/{layer}").content) == r.json()["layers"][0]["size"]
    # GitLab's ThirdParty path ends in a DELETE by digest: through the proxy, it really deletes
    r = s.delete(f"{base}/v2/grp/app/manifests/{digest}")
    assert r.status_code == 202
    assert list_tags(upstream.url, "grp/app") == ["keep"]
    status = read_status(host, config.dir).to_json()
    assert (status["state"], status["mode"], status["upstream"]) == ("on", "proxy", upstream.url)
    assert status["last_delete"]["path"] == f"/v2/grp/app/manifests/{digest}"
    assert stub_off(host, config.dir, apply=True).applied
    assert not processes_mentioning(str(tmp_path / "stub"))


# --- refusals before anything stops ---------------------------------------------------------------------

def test_port_taken_without_stop_command_changes_nothing(tmp_path: Path, tls: TLS,
                                                         cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls, stop_registry=None)
    with pytest.raises(StubError, match=r"already in use .*--stop-registry"):
        stub_on(LocalHost(), config, apply=True)
    assert not (tmp_path / "stub").exists()
    assert reg.running()


@pytest.mark.parametrize(("which", "message"), [
    ("garbage", "not a PEM certificate"),
    ("mismatch", "does not match certificate"),
    ("unreadable", "not readable"),
])
def test_bad_tls_material_is_refused_before_the_registry_stops(
        tmp_path: Path, tls: TLS, which: str, message: str, cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    cert, key = tls.cert, tls.key
    if which == "garbage":
        cert = tls.garbage
    elif which == "mismatch":
        key = tls.other_key
    else:
        key = str(tmp_path / "missing-key.pem")
    config = respond_config(tmp_path, reg, tls, cert=cert, key=key)
    with pytest.raises(StubError, match=message):
        stub_on(LocalHost(), config, apply=True)
    assert reg.running()
    assert not (tmp_path / "stub").exists()


def test_nginx_config_error_is_refused_and_leaves_no_files(tmp_path: Path, tls: TLS, monkeypatch: pytest.MonkeyPatch,
                                                           cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    from glcleanup.stub.render import render_nginx

    monkeypatch.setattr("glcleanup.stub.deploy.render_nginx",
                        lambda c: render_nginx(c).replace("events {", "events { bogus_directive;"))
    (tmp_path / "stub").mkdir()                       # an existing dir keeps its other files
    (tmp_path / "stub" / "notes.txt").write_text("mine")
    with pytest.raises(StubError, match=r"does not pass.*bogus_directive"):
        stub_on(LocalHost(), respond_config(tmp_path, reg, tls), apply=True)
    assert reg.running()
    assert sorted(p.name for p in (tmp_path / "stub").iterdir()) == ["notes.txt"]


# --- failures after the registry stopped: every one ends with the registry running ------------------------

def test_stop_command_that_leaves_the_port_busy_rolls_back(tmp_path: Path, tls: TLS, monkeypatch: pytest.MonkeyPatch,
                                                           cleanup: list[Callable[[], None]]) -> None:
    monkeypatch.setattr(stub_core, "PORT_WAIT", 0.5)
    reg = registry(tmp_path / "reg", tls, cleanup)
    pid = reg.pid()
    config = respond_config(tmp_path, reg, tls, stop_registry="true", start_registry="true")
    track_stub(tmp_path / "stub", cleanup)
    with pytest.raises(StubError, match=r"still in use after --stop-registry.*rolled back"):
        stub_on(LocalHost(), config, apply=True)
    assert reg.running()
    assert reg.pid() == pid
    assert read_status(LocalHost(), config.dir).to_json()["state"] == "off"
    assert not (tmp_path / "stub" / "state.json").exists()


def test_listen_address_not_on_this_host_is_refused_by_the_config_check(
        tmp_path: Path, tls: TLS, cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls, listen=f"192.0.2.1:{reg.port}")   # TEST-NET: not ours
    with pytest.raises(StubError, match=r"(?s)config does not pass.*192\.0\.2\.1.*Cannot assign"):
        stub_on(LocalHost(), config, apply=True)
    assert reg.running()
    assert not (tmp_path / "stub").exists()


def test_stub_that_fails_to_start_rolls_back_and_restarts_the_registry(
        tmp_path: Path, tls: TLS, cleanup: list[Callable[[], None]]) -> None:
    """The key lived with the registry (say, in its container volume) and is gone once it stops."""
    reg = registry(tmp_path / "reg", tls, cleanup)
    key = tmp_path / "registry-key.pem"
    shutil.copy(tls.key, key)
    stop = f"sh -c '{reg.stop_cmd} && mv {key} {key}.away'"
    start = f"sh -c 'mv {key}.away {key}; exec {reg.start_cmd}'"
    config = respond_config(tmp_path, reg, tls, key=str(key), stop_registry=stop, start_registry=start)
    track_stub(tmp_path / "stub", cleanup)
    with pytest.raises(StubError, match=r"(?s)did not start.*registry-key.pem.*rolled back: stub stopped, "
                                        r"registry started again"):
        stub_on(LocalHost(), config, apply=True)
    wait_for(reg.running)
    assert key.exists()
    assert not (tmp_path / "stub" / "state.json").exists()
    assert not processes_mentioning(str(tmp_path / "stub"))


def test_proxy_with_a_dead_upstream_fails_verification_and_rolls_back(
        tmp_path: Path, tls: TLS, cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls, mode="proxy", upstream=f"http://127.0.0.1:{free_port()}")
    track_stub(tmp_path / "stub", cleanup)
    with pytest.raises(StubError, match=r"answers wrong: GET /v2/: got 502.*rolled back"):
        stub_on(LocalHost(), config, apply=True)
    wait_for(reg.running)
    assert not processes_mentioning(str(tmp_path / "stub"))


class CutAfterStop:
    """A Host that loses its link right after the registry's stop command ran.

    `transient`: the link comes back (the next call reconnects, as SSHHost does); otherwise every
    later call fails, as when the laptop dies."""

    def __init__(self, inner: Host, stop_argv: Sequence[str], transient: bool) -> None:
        self.inner = inner
        self.name = inner.name
        self.stop_argv = list(stop_argv)
        self.transient = transient
        self.cut = False
        self.failures = 0

    def _check(self) -> None:
        if self.cut:
            self.failures += 1
            if self.transient:
                self.cut = False
                if isinstance(self.inner, SSHHost):
                    self.inner.close()
            raise ConnectError(f"SSH connection to {self.name} failed: link cut by the test")

    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float | None = 300.0,
            on_stdout: OutputSink | None = None) -> CommandResult:
        self._check()
        result = self.inner.run(argv, stdin, timeout, on_stdout)
        if list(argv) == self.stop_argv:
            self.cut = True
        return result

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        self._check()
        self.inner.put(data, path, mode)

    def get(self, path: str) -> bytes:
        self._check()
        return self.inner.get(path)

    def close(self) -> None:
        self.inner.close()


class FailWatcherLaunch(CutAfterStop):
    """The host refuses to start the watcher: nothing has been stopped yet."""

    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float | None = 300.0,
            on_stdout: OutputSink | None = None) -> CommandResult:
        if len(argv) > 2 and "nohup" in argv[2]:
            return CommandResult(b"", b"sh: nohup: not found\n", 127)
        return self.inner.run(argv, stdin, timeout, on_stdout)


def test_failure_before_the_stop_does_not_run_the_start_command(tmp_path: Path, tls: TLS,
                                                                 cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    pid = reg.pid()
    config = respond_config(tmp_path, reg, tls)
    host = FailWatcherLaunch(LocalHost(), [], transient=False)
    with pytest.raises(StubError, match=r"cannot start the watcher.*nohup: not found.*rolled back: stub stopped, "
                                        r"state removed"):
        stub_on(host, config, apply=True)
    assert reg.pid() == pid
    assert reg.running()
    assert read_status(LocalHost(), config.dir).to_json()["state"] == "off"


def test_ssh_cut_after_stop_is_rolled_back_on_reconnect(tmp_path: Path, tls: TLS, sshd: AsyncSSHServer,
                                                        cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls)
    track_stub(tmp_path / "stub", cleanup)
    host = CutAfterStop(ssh_host(sshd), [reg.stop_cmd], transient=True)
    with pytest.raises(StubError, match=r"link cut by the test.*rolled back"):
        stub_on(host, config, apply=True)
    host.close()
    assert host.failures == 1
    wait_for(reg.running)
    assert not (tmp_path / "stub" / "state.json").exists()


def test_ssh_cut_for_good_is_restored_by_the_guard_on_the_host(tmp_path: Path, tls: TLS, sshd: AsyncSSHServer,
                                                              cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls)
    track_stub(tmp_path / "stub", cleanup)
    host = CutAfterStop(ssh_host(sshd), [reg.stop_cmd], transient=False)
    with pytest.raises(StubError, match=r"could not reach .* the guard on the host restores by itself within 3 s"):
        stub_on(host, config, apply=True, guard_seconds=3)
    host.close()
    assert not reg.running()                       # nobody could restore yet ...
    wait_for(reg.running, timeout=15)               # ... until the guard's period ran out
    status = read_status(LocalHost(), config.dir).to_json()
    assert status["state"] == "off"
    assert status["last_off"]["reason"] == "unconfirmed"
    wait_for(lambda: not processes_mentioning(str(tmp_path / "stub")), timeout=5)


# --- on twice, off twice, start command failing -------------------------------------------------------------

def test_on_twice_and_off_twice(tmp_path: Path, tls: TLS, cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls)
    track_stub(tmp_path / "stub", cleanup)
    host = LocalHost()
    stub_on(host, config, apply=True)
    again = stub_on(host, config, apply=True)
    assert again.already
    assert not again.applied
    assert "already on" in again.warnings[0]
    other = respond_config(tmp_path, reg, tls, mode="proxy", upstream="http://127.0.0.1:1")
    with pytest.raises(StubError, match=r"already on .*run `stub off` first"):
        stub_on(host, other, apply=True)
    assert stub_off(host, config.dir, apply=True).applied
    assert stub_off(host, config.dir, apply=True).already_off
    assert reg.running()


def test_failing_start_command_keeps_the_state_so_off_can_retry(tmp_path: Path, tls: TLS,
                                                               cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    gate = tmp_path / "start-allowed"
    flaky = tmp_path / "flaky-start.sh"
    flaky.write_text(f"#!/bin/sh\n[ -f {gate} ] || {{ echo 'registry image missing' >&2; exit 3; }}\n"
                     f"exec {reg.start_cmd}\n")
    flaky.chmod(0o755)
    config = respond_config(tmp_path, reg, tls, start_registry=str(flaky))
    track_stub(tmp_path / "stub", cleanup)
    host = LocalHost()
    stub_on(host, config, apply=True)
    with pytest.raises(StubError, match=r"(?s)stub is stopped, but --start-registry failed.*registry image missing"):
        stub_off(host, config.dir, apply=True)
    status = read_status(host, config.dir).to_json()
    assert status["state"] == "off"
    assert status["stale"]
    assert status["restore_failed"] == 3
    gate.write_text("")
    off = stub_off(host, config.dir, apply=True, registry_url=reg.url)
    assert off.applied
    assert off.registry_ok
    assert reg.running()


# --- switching off by itself ---------------------------------------------------------------------------------

def test_for_duration_switches_off_by_itself(tmp_path: Path, tls: TLS, cleanup: list[Callable[[], None]]) -> None:
    from datetime import timedelta

    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls, for_duration=timedelta(seconds=2))
    track_stub(tmp_path / "stub", cleanup)
    host = LocalHost()
    result = stub_on(host, config, apply=True)
    assert result.status
    assert result.status["until"]
    assert result.status["watcher_pid"]
    assert not reg.running()
    wait_for(reg.running, timeout=10)
    status = read_status(host, config.dir).to_json()
    assert (status["state"], status["last_off"]["reason"]) == ("off", "expired")
    wait_for(lambda: not processes_mentioning(str(tmp_path / "stub")), timeout=5)
    assert stub_off(host, config.dir, apply=True).already_off


def test_quiet_minutes_switch_off_after_the_last_delete(tmp_path: Path, tls: TLS,
                                                        cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls, quiet_minutes=3 / 60)          # 3 s
    track_stub(tmp_path / "stub", cleanup)
    host = LocalHost()
    stub_on(host, config, apply=True)
    s = session(tls)
    started = time.monotonic()
    while time.monotonic() - started < 5:              # DELETEs keep it up past the quiet period
        assert s.delete(f"https://127.0.0.1:{reg.port}/v2/grp/app/manifests/latest").status_code == 202
        time.sleep(0.5)
    assert read_status(host, config.dir).to_json()["state"] == "on"
    last_delete = time.monotonic()
    wait_for(reg.running, timeout=10)
    quiet_for = time.monotonic() - last_delete
    assert 2.5 <= quiet_for <= 7
    assert read_status(host, config.dir).to_json()["last_off"]["reason"] == "quiet"


def test_quiet_minutes_never_end_before_gitlabs_latest_pending_retry(tmp_path: Path, tls: TLS,
                                                                    cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls, quiet_minutes=2 / 60)          # 2 s
    track_stub(tmp_path / "stub", cleanup)
    host = LocalHost()
    started = time.time()
    retry_at = int(started) + 5                                                # GitLab retries a row then
    stub_on(host, config, apply=True, not_before=retry_at)
    time.sleep(4.5)                                  # no DELETE at all, yet the stub waits for the retry
    assert read_status(host, config.dir).to_json()["state"] == "on"
    wait_for(reg.running, timeout=15)
    assert time.time() >= retry_at + 2 - 1           # quiet counted from the retry time (1 s watcher tick)
    assert read_status(host, config.dir).to_json()["last_off"]["reason"] == "quiet"


# --- the CLI ----------------------------------------------------------------------------------------------------

def test_cli_plan_apply_status_off(tmp_path: Path, tls: TLS, cleanup: list[Callable[[], None]]) -> None:
    reg = registry(tmp_path / "reg", tls, cleanup)
    track_stub(tmp_path / "stub", cleanup)
    runner = CliRunner()
    common = ["--registry-host", "local", "--dir", str(tmp_path / "stub")]
    on = ["stub", "on", *common, "--listen", f"127.0.0.1:{reg.port}", "--cert", tls.cert, "--key", tls.key,
          "--stop-registry", reg.stop_cmd, "--start-registry", reg.start_cmd, "--registry-url", reg.url]
    plan = runner.invoke(app, on)
    assert plan.exit_code == 0, plan.output
    assert "nothing changed: run again with --yes" in plan.stderr
    assert not (tmp_path / "stub").exists()
    assert reg.running()
    applied = runner.invoke(app, [*on, "--yes", "-o", "json"])
    assert applied.exit_code == 0, applied.output
    doc = json.loads(applied.stdout)
    assert doc["applied"]
    assert doc["status"]["state"] == "on"
    status = runner.invoke(app, ["stub", "status", *common, "-o", "json"])
    assert json.loads(status.stdout)["state"] == "on"
    assert runner.invoke(app, ["stub", "status", *common, "-o", "table"]).stdout.startswith("stub: on (respond")
    twice = runner.invoke(app, [*on, "--yes", "-o", "table"])
    assert twice.exit_code == 0
    assert "already on" in twice.stdout
    assert (twice.stdout + twice.stderr).count("\n") == 1  # on twice: one line
    off_plan = runner.invoke(app, ["stub", "off", *common])
    assert off_plan.exit_code == 0
    assert "stop the respond stub" in off_plan.stderr
    assert json.loads(off_plan.stdout)["applied"] is False
    assert not reg.running()
    off = runner.invoke(app, ["stub", "off", *common, "--yes", "-o", "json"])
    assert off.exit_code == 0, off.output
    assert json.loads(off.stdout)["registry_ok"] is True
    off2 = runner.invoke(app, ["stub", "off", *common, "--yes", "-o", "table"])
    assert off2.exit_code == 0
    assert "already off" in off2.stdout
    assert (off2.stdout + off2.stderr).count("\n") == 1  # off twice: one line
    busy = runner.invoke(app, ["stub", "on", *common, "--listen", f"127.0.0.1:{reg.port}", "--yes"])
    assert busy.exit_code == 3
    assert "already in use" in busy.stderr


# --- 50 cycles -----------------------------------------------------------------------------------------------

def _snapshot(paths: Sequence[Path]) -> dict[str, float]:
    seen: dict[str, float] = {}
    for base in paths:
        if base.is_file():
            seen[str(base)] = base.stat().st_mtime
        elif base.is_dir():
            for p in base.rglob("*"):
                with contextlib.suppress(OSError):
                    seen[str(p)] = p.stat().st_mtime
    return seen


def test_fifty_cycles_leave_no_processes_and_no_files_outside_dir(tmp_path: Path, tls: TLS,
                                                                  cleanup: list[Callable[[], None]]) -> None:
    directory = tmp_path / "stub"
    track_stub(directory, cleanup)
    config = build_config(listen=f"127.0.0.1:{free_port()}", cert=tls.cert, key=tls.key, dir=str(directory))
    watched = [tmp_path, Path("/var/log/nginx"), Path("/var/lib/nginx"), Path("/run/nginx.pid"),
               Path(os.environ["HOME"])]
    before = {k: v for k, v in _snapshot(watched).items() if not k.startswith(str(directory))}
    host = LocalHost()
    started = time.monotonic()
    for _ in range(50):
        stub_on(host, config, apply=True)
        stub_off(host, config.dir, apply=True)
    elapsed = time.monotonic() - started
    wait_for(lambda: not processes_mentioning(str(directory)), timeout=5)
    after = {k: v for k, v in _snapshot(watched).items() if not k.startswith(str(directory))}
    assert after == before
    assert read_status(host, config.dir).to_json()["state"] == "off"
    print(f"\n50 on/off cycles: {elapsed:.1f} s ({elapsed / 50 * 1000:.0f} ms per cycle)")
    assert elapsed < 60


# --- the lab: GitLab's deletion worker against the stub and the proxy ---------------------------------------

def _lab_db(tmp_path: Path, api_url: str, ca: str, upstream: str, ca_upstream: bool | str) -> tuple[Path, int]:
    from glcleanup.lab import schema, seed

    db = tmp_path / "gitlab.sqlite3"
    schema.create(db, "17.3.5", api_url)
    conn = schema.connect(db)
    try:
        schema.set_setting(conn, "registry_ca_file", ca)
        rid = seed.create_repository(conn, seed.create_project(conn, seed.ensure_group(conn, "grp"), "app"), "")
        conn.execute("UPDATE container_repositories SET status = 0, status_updated_at = ? WHERE id = ?",
                     (schema.now_db(), rid))
    finally:
        conn.close()
    push_image(upstream, "grp/app", "latest", verify=ca_upstream)
    push_image(upstream, "grp/app", "v1", verify=ca_upstream)
    return db, rid


def _row_gone(db: Path, rid: int) -> bool:
    from glcleanup.lab import schema

    conn = schema.connect(db)
    try:
        return conn.execute("SELECT 1 FROM container_repositories WHERE id = ?", (rid,)).fetchone() is None
    finally:
        conn.close()


def test_lab_worker_completes_the_deletion_through_the_proxy(tmp_path: Path, tls: TLS,
                                                             cleanup: list[Callable[[], None]]) -> None:
    from glcleanup.lab.worker import DeletionWorker

    with RegistryProcess(tmp_path / "reg") as upstream:
        port = free_port()
        config = build_config(mode="proxy", upstream=upstream.url, listen=f"127.0.0.1:{port}", cert=tls.cert,
                              key=tls.key, dir=str(tmp_path / "stub"))
        track_stub(tmp_path / "stub", cleanup)
        stub_on(LocalHost(), config, apply=True)
        try:
            db, rid = _lab_db(tmp_path, f"https://127.0.0.1:{port}", tls.ca, upstream.url, True)
            with DeletionWorker(db, time_scale=0.05, job_latency=0.02) as worker:
                wait_for(lambda: _row_gone(db, rid), timeout=20)
            passes = worker.passes_for(rid)
            assert passes[0].delete_path == "third_party"
            assert passes[-1].outcome == "destroyed"
            assert list_tags(upstream.url, "grp/app") == []           # deleted for real, not orphaned
        finally:
            stub_off(LocalHost(), config.dir, apply=True)


@pytest.mark.parametrize("via", ["local", "ssh"])
def test_lab_loop_ends_under_the_respond_stub(tmp_path: Path, tls: TLS, cleanup: list[Callable[[], None]],
                                              via: str) -> None:
    """17.3.5 loops with DIGEST_INVALID; `stub on` ends it (row destroyed). Measures stub on -> last DELETE."""
    from glcleanup.lab.worker import DeletionWorker

    host: Host = LocalHost()
    if via == "ssh":
        (tmp_path / "ssh").mkdir()
        server = AsyncSSHServer(tmp_path / "ssh").start()
        cleanup.append(server.stop)
        host = ssh_host(server)
        cleanup.append(host.close)
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls)
    track_stub(tmp_path / "stub", cleanup)
    db, rid = _lab_db(tmp_path, reg.url, tls.ca, reg.url, tls.ca)
    lock = threading.Lock()
    with DeletionWorker(db, time_scale=0.05, job_latency=0.02) as worker:
        wait_for(lambda: worker.pass_count >= 5)
        assert {p.outcome for p in worker.passes} == {"rescheduled"}          # the loop
        t_on = time.time()
        stub_on(host, config, apply=True)
        t_ready = time.time()
        wait_for(lambda: _row_gone(db, rid), timeout=20)
        t_gone = time.time()
        time.sleep(0.5)
        with lock:
            deletes = [p.finished_at for p in worker.passes
                       if any(r.startswith("DELETE ") for r in p.requests)]
    last_delete = max(deletes)
    access = (tmp_path / "stub" / "access.log").read_text()
    # zero tags from the stub: the next pass destroys the row without any DELETE
    # GitLab lists with ?n=10000 (ContainerRegistry::Client::DEFAULT_TAGS_PAGE_SIZE)
    assert re.search(r'"GET /v2/grp/app/tags/list\?n=10000 HTTP/1.1" 200 \d+ "-" "GitLab/17.3.5"', access), access
    assert worker.passes[-1].outcome == "destroyed"
    assert all(p.finished_at <= t_gone + 0.5 for p in worker.passes)        # nothing after the row went
    off = stub_off(host, config.dir, apply=True, registry_url=reg.url)
    assert off.registry_ok
    assert sorted(list_tags(reg.url, "grp/app", verify=tls.ca)) == ["latest", "v1"]    # orphaned, as documented
    print(f"\n[{via}] stub on took {t_ready - t_on:.2f} s; last looping DELETE {last_delete - t_on:.2f} s after "
          f"`stub on` started; row destroyed after {t_gone - t_on:.2f} s")
    assert last_delete - t_on < 10


# --- --deploy compose ------------------------------------------------------------------------------------------

FAKE_DOCKER = '''#!/usr/bin/python3
"""`docker compose` without an engine, for tests: the real docker-compose validates and renders the file,
then the service's own command runs on the host. With network_mode host and same-path mounts (asserted
here) that is what the official image would run."""
import os, signal, subprocess, sys, time
import yaml

args = sys.argv[1:]
if args[:1] == ["version"]:
    print("99.0.0-fake-engine")
    sys.exit(0)
if args[:1] != ["compose"]:
    sys.exit("fake docker: only `docker compose` is emulated")
args = args[1:]
if args == ["version"]:
    print("Docker Compose version v2.99.0-fake")
    sys.exit(0)
opts = {}
while args and args[0] in ("-p", "-f"):
    opts[args[0]] = args[1]
    args = args[2:]
real = ["docker-compose", "-p", opts["-p"], "-f", opts["-f"]]
pidfile = os.path.join(os.path.dirname(opts["-f"]), ".fake-compose.pid")


def service():
    out = subprocess.run(real + ["config"], capture_output=True, text=True, check=True).stdout
    return yaml.safe_load(out)["services"]["stub"]


def pid():
    try:
        p = int(open(pidfile).read())
        os.kill(p, 0)
        return p if open(f"/proc/{p}/cmdline", "rb").read() else None
    except (OSError, ValueError):
        return None


cmd = args[0]
if cmd == "config":
    sys.exit(subprocess.run(real + args).returncode)
if cmd == "up":
    svc = service()
    assert svc["network_mode"] == "host" and svc["image"].startswith("nginx:"), svc
    for v in svc["volumes"]:
        source, target = (v["source"], v["target"]) if isinstance(v, dict) else v.split(":")[:2]
        assert source == target, v
    proc = subprocess.Popen(svc["command"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    open(pidfile, "w").write(str(proc.pid))
    time.sleep(0.2)
    sys.exit(0 if proc.poll() is None else 1)
if cmd == "ps":
    if pid():
        print(f"fake{pid()}")
    sys.exit(0)
if cmd == "down":
    p = pid()
    if p:
        os.kill(p, signal.SIGTERM)
        for _ in range(100):
            if not pid():
                break
            time.sleep(0.05)
    if os.path.exists(pidfile):
        os.unlink(pidfile)
    sys.exit(0)
if cmd == "run":
    sys.exit(subprocess.run(args[args.index("stub") + 1:]).returncode)
sys.exit(f"fake docker compose: unsupported {args}")
'''


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) missing")
def test_compose_deploy_runs_the_compose_files_command(tmp_path: Path, tls: TLS, monkeypatch: pytest.MonkeyPatch,
                                                       cleanup: list[Callable[[], None]]) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(FAKE_DOCKER)
    (bindir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls, deploy="compose", http_port=str(free_port()))
    track_stub(tmp_path / "stub", cleanup)
    host = LocalHost()
    result = stub_on(host, config, apply=True, registry_url=reg.url)
    assert result.status is not None
    assert (result.status["state"], result.status["deploy"]) == ("on", "compose")
    check_respond_table(f"https://127.0.0.1:{reg.port}", tls)
    env = (tmp_path / "stub" / ".env").read_text()
    assert f"STUB_CERT={tls.cert}\n" in env
    state = json.loads((tmp_path / "stub" / "state.json").read_text())
    assert (state["compose_cmd"], state["stubctl_deploy"]) == ("docker compose", "compose")
    off = stub_off(host, config.dir, apply=True)
    assert off.registry_ok
    assert not processes_mentioning(str(tmp_path / "stub"))


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) missing")
def test_compose_without_an_engine_is_refused_before_anything_changes(tmp_path: Path, tls: TLS,
                                                                      cleanup: list[Callable[[], None]]) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client here")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0:
        pytest.skip("a docker engine is reachable here")
    reg = registry(tmp_path / "reg", tls, cleanup)
    config = respond_config(tmp_path, reg, tls, deploy="compose")
    track_stub(tmp_path / "stub", cleanup)
    with pytest.raises(StubError, match=r"no Docker daemon reachable on local \(Cannot connect to the Docker") as err:
        stub_on(LocalHost(), config, apply=True)
    assert "\n" not in str(err.value)
    assert "Traceback" not in str(err.value)
    assert reg.running()  # --stop-registry never ran
    assert not (tmp_path / "stub").exists()


def test_interactive_yes_on_a_terminal(tmp_path: Path, tls: TLS, cleanup: list[Callable[[], None]]) -> None:
    directory = tmp_path / "stub"
    track_stub(directory, cleanup)
    common = ["--registry-host", "local", "--dir", str(directory)]
    on = ["stub", "on", *common, "--listen", f"127.0.0.1:{free_port()}", "--cert", tls.cert, "--key", tls.key]
    rc, out = on_a_terminal(on, b"apply this plan?", "n", timeout=30.0)
    assert rc == 0
    assert "apply this plan?" in out
    assert not directory.exists()
    rc, out = on_a_terminal(on, b"apply this plan?", "y", timeout=30.0)
    assert rc == 0, out
    assert "stub on: respond on 127.0.0.1:" in out
    assert read_status(LocalHost(), str(directory)).on
    rc, out = on_a_terminal(["stub", "off", *common], b"apply this plan?", "y", timeout=30.0)
    assert rc == 0, out
    assert "stub off (registry not checked" in out
    assert not read_status(LocalHost(), str(directory)).on


def test_status_and_off_of_a_dir_that_never_held_a_stub(tmp_path: Path) -> None:
    status = read_status(LocalHost(), str(tmp_path / "never"))
    assert status.to_json()["state"] == "off"
    assert status.to_json()["last_delete"] is None
    assert stub_off(LocalHost(), str(tmp_path / "never"), apply=True).already_off
    assert not (tmp_path / "never").exists()
