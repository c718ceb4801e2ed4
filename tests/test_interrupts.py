"""Ctrl-C, SIGTERM and SIGHUP: a mutating command rolls back or says exactly what it committed (applied,
not verified, the journal, the undo command), exit 130; an interrupt while Python imports is one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.errors import Interrupted
from glcleanup.logs import truncate as logs_disk
from glcleanup.transport import LocalHost
from tests.support.still_lab import RUNNER, dump, make_db

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, db: Path) -> dict[str, str]:
    home = tmp_path / "home"
    return {**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "GLCLEANUP_LAB_DB": str(db),
            "PYTHONPATH": str(ROOT)}


def _applied_journal(state_home: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for path in (state_home / "glcleanup" / "journal").glob("*.json"):
            if json.loads(path.read_text()).get("state") == "applied":
                return path
        time.sleep(0.05)
    raise AssertionError("no applied journal appeared")


def _runners_left(db: Path) -> list[int]:
    """Processes that still carry this test's database in their environment (the Ruby runner)."""
    found = []
    marker = f"GLCLEANUP_LAB_DB={db}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_during_the_settle_says_applied_not_verified_and_how_to_undo(
        signum: signal.Signals, tmp_path: Path) -> None:
    db = tmp_path / "gitlab.sqlite3"
    make_db(db, "17.3.5")
    before = dump(db)
    env = _env(tmp_path, db)
    proc = subprocess.Popen([sys.executable, "-m", "glcleanup", "stop-loop", "--project", "acme/web", "--yes",
                             "--settle", "60", "--rails-host", "local", "--rails-runner", RUNNER, "-o", "json"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        journal = _applied_journal(tmp_path / "home" / "state", proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    text = err.decode()
    assert text.count("\n") == 1, text
    assert text.startswith(f"glcleanup: interrupted: {signum.name} after the change was committed: applied, "
                           "NOT verified")
    assert f"journal {journal};" in text
    assert text.rstrip().endswith(f"undo with: glcleanup undo {journal} --yes")
    assert out == b""
    deadline = time.monotonic() + 5
    while _runners_left(db) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _runners_left(db), "the runner was left running"
    assert dump(db) != before
    undone = CliRunner().invoke(app, ["undo", str(journal), "--yes", "--rails-host", "local", "--rails-runner",
                                      RUNNER, "-o", "json"], env={k: env[k] for k in ("HOME", "XDG_STATE_HOME",
                                                                                      "GLCLEANUP_LAB_DB")})
    assert undone.exit_code == 0, undone.output
    assert dump(db) == before


def test_ctrl_c_while_python_imports_the_cli_is_one_line() -> None:
    """KeyboardInterrupt raised inside the import of the CLI's dependencies (where a Ctrl-C in the first
    instant lands): one line and 130, not an import traceback."""
    code = ("import builtins\n"
            "real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name == 'paramiko':\n"
            "        raise KeyboardInterrupt\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "from glcleanup.cli import main\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert (result.returncode, result.stderr) == (130, "glcleanup: interrupted\n")


def test_an_interrupt_during_truncate_names_what_was_emptied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    logs = [tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"]
    targets = [logs_disk.TruncateTarget(str(p), str(p), 10, []) for p in logs]
    monkeypatch.setattr(logs_disk, "plan", lambda _host, _sources: targets)
    calls: list[str] = []

    def fake_truncate(_host: Any, target: logs_disk.TruncateTarget, settle: float = 1.0) -> dict[str, Any]:
        calls.append(target.path)
        if len(calls) == 2:
            raise KeyboardInterrupt("SIGTERM")
        return {"path": target.path}

    monkeypatch.setattr(logs_disk, "truncate", fake_truncate)
    with pytest.raises(Interrupted) as err:
        logs_disk.relieve(LocalHost(), {"sources": []}, lambda _t: True)
    message = str(err.value)
    assert message.startswith(f"SIGTERM during --truncate: emptied {logs[0]}; being emptied when interrupted "
                              f"(check its size): {logs[1]}; not touched: {logs[2]}; evidence saved in ")
    evidence = Path(message.rsplit("evidence saved in ", 1)[1])
    assert evidence.is_file()
    assert evidence.stat().st_mode & 0o777 == 0o600


def test_an_interrupt_during_stub_off_says_to_run_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from glcleanup.stub import deploy
    from glcleanup.stub.status import StubStatus

    state = {"mode": "respond", "listen": "127.0.0.1:5000", "deploy": "nginx", "stubctl_deploy": "nginx",
             "compose_project": "glcleanup-stub-0123abcd", "start_registry": ["true"]}
    monkeypatch.setattr(deploy, "read_status", lambda _h, d: StubStatus(d, state_file=True, running=True,
                                                                         state=state))

    def interrupted(*_args: object, **_kwargs: object) -> object:
        raise KeyboardInterrupt("SIGHUP")

    monkeypatch.setattr(deploy, "stubctl", interrupted)
    with pytest.raises(Interrupted, match=r"^SIGHUP during stub off, while the restore ran on local: .*run "
                                          r"`glcleanup stub off --registry-host local --dir /srv/stub --yes` again"):
        deploy.stub_off(LocalHost(), "/srv/stub", apply=True)
