"""Hosts: local and SSH transport, with host-key verification against real SSH servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from glcleanup.errors import AuthError, ConnectError, HostKeyError, UsageError
from glcleanup.transport import LocalHost, SSHHost, SSHOptions, open_host, parse_host
from tests.support.net import free_port
from tests.support.ssh import AsyncSSHServer, OpenSSHServer


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[AsyncSSHServer]:
    server = AsyncSSHServer(tmp_path).start()
    yield server
    server.stop()


def _host(server: AsyncSSHServer | OpenSSHServer, **kw: str) -> SSHHost:
    opts = SSHOptions(key_file=str(kw.get("key", server.key_file)),
                      known_hosts=str(kw.get("known_hosts", server.known_hosts)))
    return SSHHost(parse_host(f"root@127.0.0.1:{server.port}"), opts)


@pytest.mark.parametrize(("spec", "expected"), [
    ("local", ("local", None, None)),
    ("gitlab.example.com", ("gitlab.example.com", None, None)),
    ("ssh://git@gitlab.example.com:2222", ("gitlab.example.com", "git", 2222)),
    ("admin@10.0.0.5", ("10.0.0.5", "admin", None)),
    ("[::1]:2200", ("::1", None, 2200)),
])
def test_parse_host_accepts_the_documented_forms(spec: str, expected: tuple[str, str | None, int | None]) -> None:
    parsed = parse_host(spec)
    assert (parsed.host, parsed.user, parsed.port) == expected


@pytest.mark.parametrize("spec", ["-oProxyCommand=id", "host;rm -rf /", "a b", "user@", "h:99999", "h:0",
                                  "$(id)", "ho\nst", "x" * 300])
def test_parse_host_refuses_hostile_values(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_host(spec)


def test_local_host_runs_argv_without_a_shell(tmp_path: Path) -> None:
    result = LocalHost().run(["printf", "%s|", "a b", "$(id)", ";"], stdin=b"")
    assert result.text == "a b|$(id)|;|"
    target = tmp_path / "f"
    LocalHost().put(b"data", str(target), 0o600)
    assert target.read_bytes() == b"data"
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_ssh_runs_argv_quoted_with_stdin_and_exit_code(sshd: AsyncSSHServer) -> None:
    host = _host(sshd)
    try:
        result = host.run(["sh", "-c", 'cat; echo "$1" >&2; exit 7', "sh", "it's $(id); `x`"], stdin=b"hello")
        assert (result.stdout, result.stderr, result.exit_code) == (b"hello", b"it's $(id); `x`\n", 7)
        host.put(b"payload", str(sshd.workdir / "put.txt"))
        assert host.get(str(sshd.workdir / "put.txt")) == b"payload"
        assert host.bytes_received > 0
    finally:
        host.close()


def test_ssh_refuses_unknown_host_key_with_fingerprint(sshd: AsyncSSHServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    host = _host(sshd, known_hosts=str(empty))
    with pytest.raises(HostKeyError, match=r"unknown SSH host key .*SHA256:") as err:
        host.run(["true"])
    assert sshd.commands == []
    # the hint is a command to paste: this host and port, not placeholders
    assert str(err.value).endswith(f"accept it with: ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}")


def test_ssh_refuses_changed_host_key(sshd: AsyncSSHServer, tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    with pytest.raises(HostKeyError, match="CHANGED"):
        _host(sshd, known_hosts=str(wrong)).run(["true"])
    assert sshd.commands == []


def test_ssh_wrong_client_key_is_an_auth_error(sshd: AsyncSSHServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    stranger.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh"))
    stranger.chmod(0o600)
    with pytest.raises(AuthError, match="refused"):
        _host(sshd, key=str(stranger)).run(["true"])


def test_ssh_unreachable_host_is_a_connect_error(tmp_path: Path) -> None:
    host = open_host(f"root@127.0.0.1:{free_port()}",
                     SSHOptions(known_hosts=str(tmp_path / "kh"), connect_timeout=2))
    with pytest.raises(ConnectError, match="cannot reach"):
        host.run(["true"])


def test_ssh_config_alias_supplies_hostname_port_and_user(sshd: AsyncSSHServer, isolated_home: Path) -> None:
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(
        f"Host gitlab-prod\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User git\n"
        f"  IdentityFile {sshd.key_file}\n")
    (ssh_dir / "known_hosts").write_text(sshd.known_hosts.read_text())
    host = open_host("gitlab-prod")
    try:
        assert host.run(["echo", "via alias"]).text == "via alias\n"
    finally:
        host.close()


@pytest.mark.skipif(not OpenSSHServer.available(), reason="needs root and /usr/sbin/sshd")
def test_real_openssh_login_shell_keeps_words_intact(tmp_path: Path) -> None:
    server = OpenSSHServer(tmp_path).start()
    host = _host(server)
    try:
        words = ["a b", "'q'", '"dq"', "$HOME", "`id`", "; ls", "tab\there"]
        result = host.run(["printf", "%s\\n", *words])
        assert result.text.splitlines() == words
    finally:
        host.close()
        server.stop()


def test_ssh_config_proxyjump_reaches_the_target_through_the_jump_host(tmp_path: Path, isolated_home: Path) -> None:
    (tmp_path / "jump").mkdir()
    (tmp_path / "target").mkdir()
    jump = AsyncSSHServer(tmp_path / "jump").start()
    target = AsyncSSHServer(tmp_path / "target").start()
    try:
        ssh_dir = isolated_home / ".ssh"
        ssh_dir.mkdir()
        (ssh_dir / "config").write_text(
            f"Host bastion\n  HostName 127.0.0.1\n  Port {jump.port}\n  IdentityFile {jump.key_file}\n"
            f"Host gitlab-internal\n  HostName 127.0.0.1\n  Port {target.port}\n  ProxyJump bastion\n"
            f"  IdentityFile {target.key_file}\n")
        (ssh_dir / "known_hosts").write_text(jump.known_hosts.read_text() + target.known_hosts.read_text())
        host = open_host("gitlab-internal")
        try:
            assert host.run(["echo", "through the bastion"]).text == "through the bastion\n"
        finally:
            host.close()
        assert target.commands == ["echo 'through the bastion'"]
        assert jump.commands == []  # the jump host only forwarded the connection
    finally:
        target.stop()
        jump.stop()
