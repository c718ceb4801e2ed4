"""Hostile class "fault": the world misbehaves and glcleanup says exactly what happened (issue 13 §5).

known_hosts files with marker lines (against a real in-process SSH server), a journal disk that
fills after the first journal write (against the lab's real Ruby runner: verification goes on), and
`logs --truncate` pointed at a symlink or at a file that is not a registry log.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.errors import HostKeyError, JournalError
from glcleanup.journal.lock import database_key, project_lock
from glcleanup.journal.store import Journal
from glcleanup.lab import schema
from glcleanup.transport import LocalHost, SSHHost, SSHOptions, parse_host
from tests.support.ssh import AsyncSSHServer
from tests.support.still_lab import RUNNER, make_db, rows

OTHER_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[AsyncSSHServer]:
    server = AsyncSSHServer(tmp_path).start()
    yield server
    server.stop()


def _connect(server: AsyncSSHServer, known_hosts: Path) -> str:
    host = SSHHost(parse_host(f"root@127.0.0.1:{server.port}"),
                   SSHOptions(key_file=str(server.key_file), known_hosts=str(known_hosts)))
    try:
        return host.run(["echo", "ok"], timeout=10).text.strip()
    finally:
        host.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("markers", [
    [f"@cert-authority *.example.com ssh-ed25519 {OTHER_KEY}"],
    [f"@revoked other.example.com ssh-ed25519 {OTHER_KEY}"],
    [f"@cert-authority * ssh-ed25519 {OTHER_KEY}", f"@revoked * ssh-ed25519 {OTHER_KEY}", "@bogus", "garbage line"],
], ids=["cert-authority", "revoked-other", "all-markers"])
def test_known_hosts_marker_lines_do_not_break_ssh(sshd: AsyncSSHServer, tmp_path: Path,
                                                   markers: list[str]) -> None:
    """class fault/known-hosts: markers for other hosts are ignored for matching; our host still verifies."""
    known = tmp_path / "kh"
    known.write_text("\n".join([*markers, sshd.known_hosts.read_text().strip()]) + "\n")
    assert _connect(sshd, known) == "ok"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("also_known", [False, True], ids=["revoked-only", "revoked-and-listed"])
def test_a_revoked_host_key_is_refused(sshd: AsyncSSHServer, tmp_path: Path, also_known: bool) -> None:
    """class fault/known-hosts: `@revoked` is honoured by refusing that key, even if also listed as known."""
    line = sshd.known_hosts.read_text().strip()
    blob_type, blob = line.split()[1:3]
    known = tmp_path / "kh"
    known.write_text(f"@revoked * {blob_type} {blob}\n" + (line + "\n" if also_known else ""))
    with pytest.raises(HostKeyError, match="REVOKED"):
        _connect(sshd, known)


# --- journal disk full after the first write ----------------------------------------------------------------

@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing")
@pytest.mark.timeout(120)
def test_journal_disk_full_after_the_first_write_keeps_verifying(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """class fault/disk-full: the journal is safe on disk before the change; a later write failing must not
    kill the verification that protects the change (it is reported instead)."""
    db = tmp_path / "gitlab.sqlite3"
    ids = make_db(db, "17.6.0")
    monkeypatch.setenv("GLCLEANUP_LAB_DB", str(db))
    writes: list[str] = []
    original = Journal.save

    def save(self: Journal) -> None:
        writes.append(self.state)
        if len(writes) > 1:
            raise JournalError(f"cannot write journal {self.path}: [Errno 28] No space left on device")
        original(self)

    monkeypatch.setattr(Journal, "save", save)
    result = CliRunner().invoke(app, ["stop-loop", "--project", "acme/web", "--mode", "failed", "--settle", "0.5",
                                      "--yes", "--rails-host", "local", "--rails-runner", RUNNER, "-o", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["applied"], doc["verified"]) == (True, True)
    assert any("No space left on device" in w for w in doc["warnings"])
    assert rows(db)[ids["stuck"]]["status"] == schema.STATUS["delete_failed"]
    on_disk = json.loads(Path(doc["journal"]).read_text())
    assert on_disk["state"] == "recorded"  # the first write: every row as it was, enough for undo
    monkeypatch.setattr(Journal, "save", original)
    undone = CliRunner().invoke(app, ["undo", doc["journal"], "--yes", "--rails-host", "local", "--rails-runner",
                                      RUNNER, "-o", "json"])
    assert undone.exit_code == 0, undone.output


# --- logs --truncate on a symlink / a stranger's file --------------------------------------------------------

def _truncate(*args: str) -> Any:
    return CliRunner().invoke(app, ["logs", *args, "--since", "all", "--truncate", "--registry-host", "local",
                                    "-o", "json"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["symlink-to-secret", "plain-stranger"])
def test_truncate_refuses_a_file_with_no_registry_lines(tmp_path: Path, kind: str) -> None:
    """class fault/truncate: a symlink is shown resolved; a file without registry lines is never emptied."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\n" * 50)
    target = secret
    if kind == "symlink-to-secret":
        target = tmp_path / "registry.log"
        target.symlink_to(secret)
    result = _truncate(str(target), "--yes")
    assert result.exit_code == 2, result.output
    assert "has no registry log lines" in result.stderr
    if kind == "symlink-to-secret":
        assert f"-> {secret}" in result.stderr
    assert secret.read_text().count("\n") == 50


@pytest.mark.timeout(60)
def test_truncate_of_a_symlinked_registry_log_shows_and_empties_the_real_file(tmp_path: Path) -> None:
    """class fault/truncate: the plan names the resolved target, and that file is what gets emptied."""
    real = tmp_path / "real-registry.log"
    real.write_text('time="2026-12-01T10:00:00Z" level=info msg="response completed" go.version=go1.19.8 '
                    'http.request.method=GET http.request.uri="/v2/" http.response.status=200\n' * 20)
    link = tmp_path / "registry.log"
    link.symlink_to(real)
    result = _truncate(str(link), "--yes")
    assert result.exit_code == 0, result.output
    assert f"-> {real}" in result.stderr
    assert real.stat().st_size == 0
    assert link.is_symlink()
    plan = json.loads(result.stdout)["truncate"]["plan"][0]
    assert plan["resolved"] == str(real)


# --- the stop-loop lock follows the database, not the host string ------------------------------------------

@pytest.mark.timeout(60)
def test_local_and_root_at_loopback_take_one_lock(sshd: AsyncSSHServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """class fault/lock: `local` and `root@127.0.0.1` reach one database, so the second run is refused
    before its runner boots."""
    monkeypatch.setenv("GLCLEANUP_LAB_BOOT_LOG", str(tmp_path / "boots.log"))
    held = database_key(LocalHost(), "local")
    assert held.startswith("machine:")
    with project_lock("local", "acme/web", "stop-loop", key=held):
        result = CliRunner().invoke(app, [
            "stop-loop", "--project", "acme/web", "--yes", "--rails-host", f"root@127.0.0.1:{sshd.port}",
            "--rails-runner", RUNNER, "--ssh-key", str(sshd.key_file), "--known-hosts", str(sshd.known_hosts),
            "-o", "json"])
    assert result.exit_code == 3, result.output
    assert "another glcleanup stop-loop is working on acme/web via local" in result.stderr
    assert not (tmp_path / "boots.log").exists()
