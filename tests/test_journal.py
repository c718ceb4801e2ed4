"""Journal files (atomic, private, found again by undo), the per-project lock, and the registry leftovers
listing that `stop-loop --mode done` prints."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glcleanup.errors import JournalError, LockedError, NotFoundError, UsageError
from glcleanup.journal import store as journal_mod
from glcleanup.journal.lock import lock_path, project_lock
from glcleanup.journal.store import APPLIED, RECORDED, ROLLED_BACK, UNDONE, Journal, ensure_writable
from glcleanup.ops.leftovers import registry_leftovers
from glcleanup.paths import journal_dir
from tests.support.net import free_port


def new_journal(state: str = APPLIED) -> Journal:
    journal = Journal.new("stop-loop", "acme/web", {"changes": [], "rows": [], "project": {"full_path": "acme/web"}})
    journal.data["state"] = state
    journal.save()
    return journal


def test_journal_lives_under_xdg_state_home_private_and_whole(isolated_home: Path) -> None:
    ensure_writable()
    journal = new_journal()
    journal.data.update(changes=[{"id": 1, "action": "park"}, {"id": 2, "action": "park"}],
                        project={"id": 7, "full_path": "acme/web"})
    assert journal.path.parent == isolated_home / ".local" / "state" / "glcleanup" / "journal"
    assert (journal.path.stat().st_mode & 0o777) == 0o600
    assert (journal.path.parent.stat().st_mode & 0o777) == 0o700
    journal.merge_rows("after", [{"id": 2, "v": 1}, {"id": 1, "v": 1}])
    journal.merge_rows("after", [{"id": 2, "v": 2}])
    journal.save()
    assert Journal.load(journal.path).data["after"] == [{"id": 1, "v": 1}, {"id": 2, "v": 2}]
    assert [p.name for p in journal.path.parent.iterdir()] == [journal.path.name]  # no temp files left


def test_fallback_to_home_when_xdg_state_home_is_unset(monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    monkeypatch.delenv("XDG_STATE_HOME")
    assert journal_dir() == isolated_home / ".local" / "state" / "glcleanup" / "journal"


def test_latest_for_undo_skips_rolled_back_runs() -> None:
    with pytest.raises(NotFoundError, match="no applied, not yet undone journal"):
        journal_mod.latest_for_undo()
    first = new_journal(APPLIED)
    time.sleep(0.01)
    new_journal(ROLLED_BACK)
    assert journal_mod.latest_for_undo().path == first.path


def test_latest_for_undo_is_the_newest_applied_not_yet_undone_one() -> None:
    """Before: the newest journal was picked even when it was already undone, and undo refused."""
    applied = new_journal(APPLIED)
    time.sleep(0.01)
    new_journal(UNDONE)
    time.sleep(0.01)
    new_journal(ROLLED_BACK)
    assert journal_mod.latest_for_undo().path == applied.path
    time.sleep(0.01)
    recorded = new_journal(RECORDED)  # a broken run: it may hold a change, so it counts
    assert journal_mod.latest_for_undo().path == recorded.path
    for journal in (applied, recorded):
        journal.data["state"] = UNDONE
        journal.save()
    with pytest.raises(NotFoundError, match=r"no applied, not yet undone journal .*undo --list"):
        journal_mod.latest_for_undo()


def test_list_journals_newest_first_with_time_project_mode_state(tmp_path: Path) -> None:
    old = new_journal(APPLIED)
    time.sleep(0.01)
    new = new_journal(UNDONE)
    (old.path.parent / "zz-broken.json").write_text("{")
    entries = journal_mod.list_journals()
    assert [e["state"] for e in entries] == ["unreadable", "undone", "applied"]
    assert [e["journal"] for e in entries[1:]] == [str(new.path), str(old.path)]
    assert set(entries[1]) >= {"time", "project", "mode", "state", "journal"}


def test_not_a_journal_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "x.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(UsageError, match="not a glcleanup journal"):
        Journal.load(other)
    with pytest.raises(NotFoundError):
        Journal.load(tmp_path / "missing.json")


def test_unwritable_state_dir_is_found_before_the_runner_boots(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    with pytest.raises(JournalError, match="nothing was changed"):
        ensure_writable()


def test_lock_refuses_a_second_holder_and_names_the_first() -> None:
    with project_lock("ssh://gitlab.example", "acme/web", "stop-loop"):
        with pytest.raises(LockedError, match=r"another glcleanup stop-loop is working on acme/web .*pid \d+"), \
                project_lock("ssh://GITLAB.example", "ACME/web", "undo"):
            pass
        with project_lock("ssh://gitlab.example", "acme/other", "stop-loop"):
            pass  # another project is free
    with project_lock("ssh://gitlab.example", "acme/web", "undo"):
        pass  # released


def test_lock_of_a_dead_holder_is_free(tmp_path: Path) -> None:
    path = lock_path("local", "acme/web")
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(LockedError), project_lock("local", "acme/web", "stop-loop"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with project_lock("local", "acme/web", "stop-loop"):
        assert os.path.exists(path)


class _Registry(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = json.dumps({"name": "acme/web", "tags": ["v1", "latest"]}).encode()
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.send_response(200)
        accept = self.headers.get("Accept", "")
        self.send_header("Docker-Content-Digest", "sha256:" + ("2" if "manifest.v2+json" in accept else "1") * 64)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def fake_registry() -> Iterator[tuple[str, type[_Registry]]]:
    handler = type("Handler", (_Registry,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_leftovers_list_tags_and_schema2_digests(fake_registry: tuple[str, type[_Registry]]) -> None:
    url, _handler = fake_registry
    left = registry_leftovers(url, ["acme/web"])
    assert left["repositories"] == [{"path": "acme/web", "tags": [
        {"tag": "latest", "digest": "sha256:" + "2" * 64}, {"tag": "v1", "digest": "sha256:" + "2" * 64}]}]
    assert "garbage" in left["note"]


def test_leftovers_say_when_the_registry_needs_auth_or_is_away(fake_registry: tuple[str, type[_Registry]]) -> None:
    url, handler = fake_registry
    handler.status = 401
    assert "needs authentication" in registry_leftovers(url, ["acme/web"])["repositories"][0]["error"]
    away = registry_leftovers(f"http://127.0.0.1:{free_port()}", ["acme/web", "acme/api"], timeout=2)
    assert "unreachable" in away["error"]
    assert [r["path"] for r in away["repositories"]] == ["acme/web", "acme/api"]
    assert "no --registry-url" in registry_leftovers(None, ["acme/web"])["error"]
