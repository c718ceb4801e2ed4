"""Faults while stop_loop.rb runs: before the journal, inside the transaction, after the commit.

Two kinds of cut: over real SSH the session is dropped and the runner dies with it (the runner command
starts with `exec`, so the process AsyncSSHServer.drop_connections() kills is the runner itself, not a
shell around it); and a link that only goes away (our stdout closes under a runner that lives on, as
when sshd loses the client). Each time the database is all or nothing and the command says which."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from glcleanup.cli import app
from glcleanup.errors import ConnectError, JournalError
from glcleanup.gitlab.rails import RailsRunner
from glcleanup.journal.store import Journal
from glcleanup.lab import schema
from glcleanup.ops import stop_loop as stop_loop_module
from glcleanup.ops.stop_loop import StopLoopRequest
from glcleanup.paths import journal_dir
from glcleanup.settings import Settings
from glcleanup.transport import CommandResult, SSHHost, SSHOptions, parse_host
from tests.support.ssh import AsyncSSHServer, OpenSSHServer
from tests.support.still_lab import RUNNER, PgDsn, dump, make_db

EXEC_RUNNER = f"exec {RUNNER}"  # `sh -c` would otherwise survive as the parent and shield the runner

pytestmark = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing")


@pytest.fixture
def db(tmp_path: Path, database: str | None, pg_cluster_or_none: Any) -> tuple[Path, dict[str, int]]:
    """The lab database on PostgreSQL and on SQLite (`database` from conftest)."""
    path: Path = tmp_path / "gitlab.sqlite3"
    if database is not None:
        path = PgDsn(database, tmp_path, pg_cluster_or_none)  # type: ignore[assignment]
    return path, make_db(path, "17.3.5")


@pytest.fixture
def pg_cluster_or_none(request: pytest.FixtureRequest, database: str | None) -> Any:
    return request.getfixturevalue("pg_cluster") if database is not None else None


def lab_env(path: Path | str) -> dict[str, str]:
    """What the runner needs to find the lab database."""
    if isinstance(path, PgDsn):
        return {"GLCLEANUP_LAB_DB": str(path.parent / "gitlab.sqlite3"), "GLCLEANUP_LAB_DATABASE_URL": str(path)}
    return {"GLCLEANUP_LAB_DB": str(path)}


def slow_trigger(path: Path | str, rid: int) -> None:
    """A trigger that takes seconds on one row's update: a window in the middle of the transaction."""
    if isinstance(path, PgDsn):
        conn = schema.connect(path)
        conn.executescript("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                           "PERFORM pg_sleep(3); RETURN NEW; END $$; "
                           f"CREATE TRIGGER slow BEFORE UPDATE ON container_repositories FOR EACH ROW "
                           f"WHEN (OLD.id = {int(rid)}) EXECUTE FUNCTION slow();")
        conn.close()
        return
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE burn(x); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                       "WHERE x < 330) INSERT INTO burn SELECT x FROM c;")
    conn.execute(f"CREATE TRIGGER slow BEFORE UPDATE ON container_repositories WHEN OLD.id = {int(rid)} "  # noqa: S608 - DDL takes no parameters; an int id
                 "BEGIN SELECT count(*) FROM burn a, burn b, burn c WHERE a.x + b.x + c.x < 0; END")
    conn.commit()
    conn.close()


def drop_slow_trigger(path: Path | str) -> None:
    conn = schema.connect(path) if isinstance(path, PgDsn) else sqlite3.connect(path)
    conn.execute("DROP TRIGGER slow ON container_repositories" if isinstance(path, PgDsn) else "DROP TRIGGER slow")
    conn.commit()
    conn.close()


@pytest.fixture
def server_factory(tmp_path: Path, db: tuple[Path, dict[str, int]]) -> Iterator[Callable[..., AsyncSSHServer]]:
    servers: list[AsyncSSHServer] = []

    def make(**env: str) -> AsyncSSHServer:
        work = tmp_path / f"ssh{len(servers)}"
        work.mkdir()
        server = AsyncSSHServer(work, env={**lab_env(db[0]), **env}).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def invoke(server: AsyncSSHServer, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--rails-host", f"root@127.0.0.1:{server.port}",
                                    "--ssh-key", str(server.key_file), "--known-hosts", str(server.known_hosts),
                                    "--rails-runner", EXEC_RUNNER, "-o", "json"])


def journal_state() -> str | None:
    files = list(journal_dir().glob("*.json")) if journal_dir().exists() else []
    return json.loads(files[0].read_text())["state"] if files else None


def cut_when(server: AsyncSSHServer, cond: Callable[[], bool], delay: float = 0.0) -> threading.Thread:
    """From another thread: once `cond` holds, drop the connection (the runner dies with it)."""
    def run() -> None:
        deadline = time.monotonic() + 30
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        server.drop_connections()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_cut_before_the_journal_changes_nothing(server_factory: Callable[..., AsyncSSHServer],
                                                db: tuple[Path, dict[str, int]]) -> None:
    server = server_factory(GLCLEANUP_LAB_BOOT_DELAY="3")
    before = dump(db[0])
    cutter = cut_when(server, lambda: bool(server.commands), delay=1.0)
    result = invoke(server, "stop-loop", "--project", "acme/web", "--mode", "failed", "--yes")
    cutter.join(5)
    assert result.exit_code == 3
    assert "nothing was changed (the script stopped before it journaled any row" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert dump(db[0]) == before
    assert journal_state() is None


def test_cut_inside_the_transaction_rolls_back(server_factory: Callable[..., AsyncSSHServer],
                                               db: tuple[Path, dict[str, int]]) -> None:
    path, ids = db
    slow_trigger(path, ids["ongoing"])  # seconds on the second row: a window mid-transaction
    before = dump(path)
    server = server_factory()
    cutter = cut_when(server, lambda: journal_state() == "recorded", delay=0.5)
    result = invoke(server, "stop-loop", "--project", "acme/web", "--mode", "failed", "--yes")
    cutter.join(5)
    assert result.exit_code == 3
    assert "the changes MAY have been committed (the transaction is all or nothing)" in result.stderr
    assert "glcleanup scan --source rails --project acme/web" in result.stderr
    assert dump(path) == before  # the first row was parked inside the transaction: rolled back with it
    assert journal_state() == "recorded"

    drop_slow_trigger(path)
    checked = invoke(server, "undo", "--yes")
    assert checked.exit_code == 0, checked.output
    assert "never committed" in checked.stderr or "never committed" in checked.stdout
    assert journal_state() == "rolled_back"


def test_cut_after_the_commit_keeps_the_change_and_says_so(server_factory: Callable[..., AsyncSSHServer],
                                                           db: tuple[Path, dict[str, int]]) -> None:
    path, ids = db
    before = dump(path)
    server = server_factory()
    cutter = cut_when(server, lambda: journal_state() == "applied", delay=0.3)
    result = invoke(server, "stop-loop", "--project", "acme/web", "--mode", "failed", "--settle", "5", "--yes")
    cutter.join(5)
    assert result.exit_code == 3
    assert "the changes WERE committed; verification did not finish" in result.stderr
    conn = schema.connect(path)
    parked = {r["id"]: r["status"] for r in conn.execute("SELECT id, status FROM container_repositories")}
    conn.close()
    assert parked[ids["stuck"]] == parked[ids["ongoing"]] == schema.STATUS["delete_failed"]
    assert parked[ids["outside"]] == schema.STATUS["delete_scheduled"]
    undone = invoke(server, "undo", "--yes")
    assert undone.exit_code == 0, undone.output
    assert json.loads(undone.stdout)["exact"] is True
    assert dump(path) == before


class VanishingLink:
    """A Host whose reader goes away once `cut_on(stdout so far)` holds: our end of the runner's stdout is
    closed (its next write fails with EPIPE, as when sshd loses the client) and run() raises ConnectError.
    The runner process lives on; `wait()` lets a test see what it did by itself."""

    name = "vanishing"

    def __init__(self, cut_on: Callable[[bytes], bool]) -> None:
        self.cut_on = cut_on
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float | None = None,
            on_stdout: Callable[[bytes], None] | None = None) -> CommandResult:
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(stdin or b"")
        self.proc.stdin.close()
        seen = b""
        while chunk := self.proc.stdout.read1(65536):
            seen += chunk
            if on_stdout is not None:
                on_stdout(chunk)
            if self.cut_on(seen):
                self.proc.stdout.close()
                raise ConnectError(f"SSH connection to {self.name} closed before {argv[0]} finished")
        return CommandResult(seen, b"", self.proc.wait())

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait(60)

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        raise NotImplementedError

    def get(self, path: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        return None


def _run_with_link(monkeypatch: pytest.MonkeyPatch, link: VanishingLink, settle: float) -> str:
    monkeypatch.setattr(stop_loop_module, "runner_from_settings", lambda _s: RailsRunner(link, RUNNER))
    request = StopLoopRequest("acme/web", mode="failed", settle=settle, apply=True)
    with pytest.raises(ConnectError) as failure:
        stop_loop_module.stop_loop(Settings(rails_host="local", rails_runner=RUNNER), request)
    return str(failure.value)


def test_link_gone_before_the_journal_the_runner_changes_nothing(monkeypatch: pytest.MonkeyPatch,
                                                                db: tuple[Path, dict[str, int]]) -> None:
    path, _ids = db
    for key, value in lab_env(path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GLCLEANUP_LAB_BOOT_DELAY", "1")  # the reader leaves during the boot
    before = dump(path)
    link = VanishingLink(lambda seen: b"WARNING" in seen)
    message = _run_with_link(monkeypatch, link, settle=0.2)
    assert "nothing was changed" in message
    assert link.wait() != 0  # the journal line hit EPIPE inside the transaction
    assert dump(path) == before
    assert journal_state() is None


def test_link_gone_after_the_commit_the_runner_still_verifies(monkeypatch: pytest.MonkeyPatch,
                                                             db: tuple[Path, dict[str, int]]) -> None:
    path, ids = db
    for key, value in lab_env(path).items():
        monkeypatch.setenv(key, value)
    link = VanishingLink(lambda seen: b'GLCLEANUP-EVENT:{"applied"' in seen)
    started = time.monotonic()
    message = _run_with_link(monkeypatch, link, settle=1.5)
    assert "the changes WERE committed" in message
    assert journal_state() == "applied"
    link.wait()
    assert time.monotonic() - started >= 1.5  # it went on watching for write-backs with nobody listening
    conn = schema.connect(path)
    statuses = {r["id"]: r["status"] for r in conn.execute("SELECT id, status FROM container_repositories")}
    conn.close()
    assert statuses[ids["stuck"]] == statuses[ids["ongoing"]] == schema.STATUS["delete_failed"]
    rails_log = (path.parent / "log" / "production.log").read_text()
    assert "glcleanup stop-loop journal:" in rails_log  # the host-side copy of the journal


def test_journal_that_cannot_be_saved_is_printed_and_reported(monkeypatch: pytest.MonkeyPatch,
                                                              db: tuple[Path, dict[str, int]]) -> None:
    for key, value in lab_env(db[0]).items():
        monkeypatch.setenv(key, value)

    def disk_full(self: Journal) -> None:
        raise JournalError(f"cannot write journal {self.path}: [Errno 28] No space left on device")

    monkeypatch.setattr(Journal, "save", disk_full)
    request = StopLoopRequest("acme/web", mode="failed", settle=0.2, apply=True)
    with pytest.raises(JournalError, match="the changes MAY have been committed") as failure:
        stop_loop_module.stop_loop(Settings(rails_host="local", rails_runner=RUNNER), request)
    assert "No space left on device" in str(failure.value)
    assert '"rows": [{"id": 1' in (failure.value.details or "")  # the CLI prints details after the line


@pytest.mark.skipif(not OpenSSHServer.available(), reason="needs root and /usr/sbin/sshd")
@pytest.mark.parametrize("when", ["before_journal", "after_commit"])
def test_real_sshd_client_gone(when: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                               db: tuple[Path, dict[str, int]]) -> None:
    """The real thing: the client's TCP connection dies; sshd closes the session's pipes and leaves the
    runner alive, so only its next write fails. Before the journal: that write is the journal line, inside
    the transaction, so nothing changes. After the commit: the runner keeps verifying with nobody listening."""
    path, ids = db
    server = OpenSSHServer(tmp_path, set_env={**lab_env(path),
                                              "GLCLEANUP_LAB_BOOT_DELAY": "2" if when == "before_journal" else "0"})
    server.start()
    host = SSHHost(parse_host(f"root@127.0.0.1:{server.port}"),
                   SSHOptions(key_file=str(server.key_file), known_hosts=str(server.known_hosts)))
    monkeypatch.setattr(stop_loop_module, "runner_from_settings", lambda _s: RailsRunner(host, RUNNER))
    before = dump(path)

    def cut() -> None:
        deadline = time.monotonic() + 30
        ready = (lambda: True) if when == "before_journal" else (lambda: journal_state() == "applied")
        time.sleep(1.0 if when == "before_journal" else 0.0)
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        client = host._client
        transport = client.get_transport() if client else None
        if transport is not None and transport.sock is not None:
            transport.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]

    cutter = threading.Thread(target=cut, daemon=True)
    cutter.start()
    request = StopLoopRequest("acme/web", mode="failed", settle=2.0, apply=True)
    try:
        with pytest.raises(ConnectError) as failure:
            stop_loop_module.stop_loop(Settings(rails_host="ssh", rails_runner=RUNNER), request)
        cutter.join(5)
        time.sleep(3.0)  # whatever the runner still does on the server, it does by now
    finally:
        host.close()
        server.stop()
    conn = schema.connect(path)
    statuses = {r["id"]: r["status"] for r in conn.execute("SELECT id, status FROM container_repositories")}
    conn.close()
    if when == "before_journal":
        assert "nothing was changed" in str(failure.value)
        assert dump(path) == before
    else:
        assert "the changes WERE committed" in str(failure.value)
        assert statuses[ids["stuck"]] == statuses[ids["ongoing"]] == schema.STATUS["delete_failed"]
