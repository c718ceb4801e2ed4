"""stop-loop and undo on a still lab database (no worker): the real Ruby/ActiveRecord runner, whole-table
dumps before and after, rollback on a Ruby exception, the lock, input validation, one boot per command."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from glcleanup.cli import app
from glcleanup.lab import schema, seed
from glcleanup.ops.stop_loop import StopLoopRequest, stop_loop
from glcleanup.paths import journal_dir
from glcleanup.settings import Settings
from tests.support.net import wait_until

pytestmark = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing")
LAB_RAILS = Path(__file__).parents[1] / "glcleanup" / "lab" / "rails" / "gitlab-rails"
RUNNER = f"{LAB_RAILS} runner"
VERSIONS = ("16.6.1", "17.3.5", "17.5.0", "17.6.0")


def make_db(path: Path, version: str) -> dict[str, int]:
    """acme/web: stuck, ongoing, fine (cleanup run unfinished), parked; other/x: a stuck one outside."""
    schema.create(path, version)
    conn = schema.connect(path)
    web = seed.create_project(conn, seed.ensure_group(conn, "acme"), "web")
    other = seed.create_project(conn, seed.ensure_group(conn, "other"), "x")
    ids = {
        "stuck": seed.create_repository(conn, web, "", "delete_scheduled"),
        "ongoing": seed.create_repository(conn, web, "app", "delete_ongoing"),
        "fine": seed.create_repository(conn, web, "ok", cleanup_status="cleanup_unfinished"),
        "parked": seed.create_repository(conn, web, "old", "delete_failed"),
        "outside": seed.create_repository(conn, other, "", "delete_scheduled"),
    }
    conn.execute("UPDATE container_repositories SET delete_started_at = '2026-11-29 01:02:03.123456' "
                 "WHERE id = ?", (ids["ongoing"],))
    if schema.has_retry_columns(version):
        conn.execute("UPDATE container_repositories SET failed_deletion_count = 3, "
                     "next_delete_attempt_at = '2026-11-29 01:10:00.000001' WHERE id = ?", (ids["stuck"],))
    seed.create_policy(conn, web, enabled=True)
    seed.create_policy(conn, other, enabled=True)
    conn.close()
    return ids


def dump(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def rows(db: Path, table: str = "container_repositories") -> dict[Any, dict[str, Any]]:
    conn = schema.connect(db)
    try:
        key = "project_id" if table == "container_expiration_policies" else "id"
        return {r[key]: dict(r) for r in conn.execute(f"SELECT * FROM {table}")}  # noqa: S608
    finally:
        conn.close()


def execute(db: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(db)
    if params:
        conn.execute(sql, params)
        conn.commit()
    else:
        conn.executescript(sql)
    conn.close()


@pytest.fixture(params=VERSIONS)
def lab_db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> tuple[Path, str, dict[str, int]]:
    db = tmp_path / "gitlab.sqlite3"
    ids = make_db(db, request.param)
    monkeypatch.setenv("GLCLEANUP_LAB_DB", str(db))
    monkeypatch.setenv("GLCLEANUP_LAB_BOOT_LOG", str(tmp_path / "boots.log"))
    return db, request.param, ids


def boots(db: Path) -> int:
    log = db.parent / "boots.log"
    return log.read_text().count("\n") if log.exists() else 0


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--rails-host", "local", "--rails-runner", RUNNER, "-o", "json"])


def stop(*extra: str) -> Result:
    return cli("stop-loop", "--project", "acme/web", "--settle", "0.3", *extra)


def test_dry_run_shows_the_plan_and_changes_nothing(lab_db: tuple[Path, str, dict[str, int]]) -> None:
    db, _version, ids = lab_db
    before = dump(db)
    result = stop("--disable-cleanup-policy")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"plan", "applied", "journal", "verified"} <= set(doc)
    assert doc["applied"] is False
    assert doc["journal"] is None
    moves = {(p["id"], p["action"], p["from"], p["to"]) for p in doc["plan"]}
    assert moves == {(ids["stuck"], "destroy", "delete_scheduled", "removed"),
                     (ids["ongoing"], "destroy", "delete_ongoing", "removed"),
                     (ids["fine"], "reset_cleanup", "cleanup_unfinished", "cleanup_unscheduled"),
                     (None, "disable_cleanup_policy", "enabled", "disabled")}
    assert [r["id"] for r in doc["already_failed"]] == [ids["parked"]]
    assert dump(db) == before
    assert boots(db) == 1
    assert not journal_dir().exists() or not list(journal_dir().glob("*.json"))


@pytest.mark.parametrize("mode", ["done", "failed"])
def test_apply_then_undo_restores_the_database_byte_for_byte(lab_db: tuple[Path, str, dict[str, int]],
                                                             mode: str) -> None:
    db, version, ids = lab_db
    before_dump, before = dump(db), rows(db)
    policies_before = rows(db, "container_expiration_policies")
    result = stop("--mode", mode, "--disable-cleanup-policy", "--yes")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["applied"] is True
    assert doc["verified"] is True
    assert boots(db) == 1
    after = rows(db)
    targets = {ids["stuck"], ids["ongoing"]}
    if mode == "done":
        assert targets.isdisjoint(after)
        assert doc["left_in_registry"]["repositories"][0]["path"] == "acme/web"
    else:
        for rid in targets:
            assert after[rid]["status"] == schema.STATUS["delete_failed"]
            assert after[rid]["delete_started_at"] is None
            assert after[rid]["status_updated_at"] != before[rid]["status_updated_at"]
        if schema.has_retry_columns(version):
            assert after[ids["stuck"]]["failed_deletion_count"] == 3  # kept within 0..MAX, untouched
        assert "delete_scheduled" in doc["requeue_hint"]
    assert after[ids["fine"]]["expiration_policy_cleanup_status"] == 0
    # nothing outside the plan moved: every other row and the other project's policy are identical
    for rid in set(before) - targets - {ids["fine"]}:
        assert after[rid] == before[rid]
    policies = rows(db, "container_expiration_policies")
    other = next(k for k in policies if k != after[ids["fine"]]["project_id"])
    assert policies[other] == policies_before[other]
    assert policies[after[ids["fine"]]["project_id"]]["enabled"] == 0

    journal = json.loads(Path(doc["journal"]).read_text())
    assert journal["state"] == "applied"
    assert {r["id"] for r in journal["rows"]} == targets | {ids["fine"]}
    assert journal["project"]["full_path"] == "acme/web"
    assert (Path(doc["journal"]).stat().st_mode & 0o777) == 0o600

    preview = cli("undo")
    assert preview.exit_code == 0, preview.output
    assert json.loads(preview.stdout)["applied"] is False
    assert dump(db) != before_dump
    undone = cli("undo", doc["journal"], "--yes")
    assert undone.exit_code == 0, undone.output
    assert json.loads(undone.stdout)["exact"] is True
    assert dump(db) == before_dump
    assert json.loads(Path(doc["journal"]).read_text())["state"] == "undone"
    again = cli("undo", "--yes")
    assert again.exit_code == 3
    assert "already undone" in again.stderr
    assert dump(db) == before_dump
    assert boots(db) == 3  # stop-loop, undo preview, undo; the refused one never booted


def test_undo_refuses_when_rows_changed_since(lab_db: tuple[Path, str, dict[str, int]]) -> None:
    db, _version, ids = lab_db
    assert stop("--mode", "failed", "--yes").exit_code == 0
    execute(db, "UPDATE container_repositories SET status = 0 WHERE id = ?", ids["ongoing"])
    changed = dump(db)
    result = cli("undo", "--yes")
    assert result.exit_code == 3
    assert f"container repository {ids['ongoing']} changed since" in result.stderr
    assert dump(db) == changed

    # done mode: the removed row exists again under its name
    db2 = db.parent / "second.sqlite3"
    make_db(db2, _version)
    result = CliRunner().invoke(app, ["stop-loop", "--project", "acme/web", "--repository", str(ids["stuck"]),
                                      "--settle", "0.1", "--yes", "--rails-host", "local", "--rails-runner",
                                      RUNNER, "-o", "json"], env={"GLCLEANUP_LAB_DB": str(db2)})
    assert result.exit_code == 0, result.output
    execute(db2, "INSERT INTO container_repositories(project_id, name, created_at, updated_at) SELECT "
                 "project_id, '', created_at, updated_at FROM container_repositories WHERE id = ?", ids["ongoing"])
    refused = CliRunner().invoke(app, ["undo", "--yes", "--rails-host", "local", "--rails-runner", RUNNER],
                                 env={"GLCLEANUP_LAB_DB": str(db2)})
    assert refused.exit_code == 3
    assert "has a new repository named" in refused.stderr


def test_repository_narrowing_and_foreign_ids(lab_db: tuple[Path, str, dict[str, int]]) -> None:
    db, _version, ids = lab_db
    before = rows(db)
    result = stop("--repository", str(ids["ongoing"]), "--mode", "failed", "--yes")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [p["id"] for p in doc["plan"]] == [ids["ongoing"]]
    after = rows(db)
    assert after[ids["ongoing"]]["status"] == schema.STATUS["delete_failed"]
    assert {k: v for k, v in after.items() if k != ids["ongoing"]} == {
        k: v for k, v in before.items() if k != ids["ongoing"]}

    frozen = dump(db)
    foreign = stop("--repository", str(ids["outside"]), "--yes")
    assert foreign.exit_code == 3
    assert f"container repository {ids['outside']} does not belong to project acme/web" in foreign.stderr
    assert "nothing was changed" in foreign.stderr
    missing = cli("stop-loop", "--project", "acme/nope", "--yes")
    assert missing.exit_code == 3
    assert "project not found: acme/nope" in missing.stderr
    assert dump(db) == frozen


@pytest.mark.parametrize("args", [
    ["--project", "a/b'; system('id') #"], ["--project", "a/$(id)"], ["--project", "a/../etc"],
    ["--project", "acme/web", "--repository", "1; DROP TABLE x"], ["--project", "acme/web", "--repository", "-1"],
    ["--project", "acme/web", "--repository", "0x10"], ["--project", "acme/web", "--repository", "１"],
    ["--project", "acme/web", "--mode", "nuke"], ["--project", "acme/web", "--settle", "-1"],
])
def test_hostile_input_is_refused_before_anything_runs(args: list[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLCLEANUP_LAB_BOOT_LOG", str(tmp_path / "boots.log"))
    result = CliRunner().invoke(app, ["stop-loop", *args, "--yes", "--rails-host", "local", "--rails-runner", RUNNER])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("glcleanup: error:")
    assert not (tmp_path / "boots.log").exists()


@pytest.mark.parametrize("mode", ["done", "failed"])
def test_ruby_exception_mid_apply_rolls_everything_back(lab_db: tuple[Path, str, dict[str, int]], mode: str) -> None:
    db, _version, ids = lab_db
    event = "DELETE" if mode == "done" else "UPDATE"
    execute(db, f"CREATE TRIGGER boom BEFORE {event} ON container_repositories WHEN OLD.id = {ids['ongoing']} "
                "BEGIN SELECT RAISE(ABORT, 'glcleanup test: storage on fire'); END;")
    before = dump(db)
    result = stop("--mode", mode, "--yes")
    assert result.exit_code == 3
    assert "rolled back" in result.stderr
    assert "storage on fire" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert dump(db) == before  # the first row's change was undone with the transaction
    journal = json.loads(next(journal_dir().glob("*.json")).read_text())
    assert journal["state"] == "rolled_back"
    nothing = cli("undo")
    assert nothing.exit_code == 3
    assert "no journal to undo" in nothing.stderr


def test_second_stop_loop_on_the_same_project_is_refused(lab_db: tuple[Path, str, dict[str, int]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    db, _version, _ids = lab_db
    monkeypatch.setenv("GLCLEANUP_LAB_BOOT_DELAY", "2")
    settings = Settings(rails_host="local", rails_runner=RUNNER)
    outcome: dict[str, Any] = {}

    def first() -> None:
        outcome["report"] = stop_loop(settings, StopLoopRequest("acme/web", mode="failed", settle=0.2, apply=True))

    thread = threading.Thread(target=first)
    thread.start()
    wait_for(lambda: boots(db) == 0 and any((journal_dir().parent / "locks").glob("*.lock")))
    time.sleep(0.3)
    second = stop("--yes")
    undo = cli("undo", "--yes")
    thread.join(30)
    assert second.exit_code == 3
    assert "another glcleanup stop-loop is working on acme/web" in second.stderr
    assert outcome["report"].verified is True
    assert undo.exit_code == 3  # either locked or, had it won the race, no journal yet: never a change
    other = CliRunner().invoke(app, ["stop-loop", "--project", "other/x", "--settle", "0", "--rails-host", "local",
                                     "--rails-runner", RUNNER, "-o", "json"])
    assert other.exit_code == 0  # another project is not locked


def test_interactive_yes_applies_only_the_rows_shown(lab_db: tuple[Path, str, dict[str, int]]) -> None:
    db, _version, ids = lab_db
    seen: list[int] = []

    def confirm(report: Any) -> bool:
        seen.extend(p["id"] for p in report.plan)
        execute(db, "UPDATE container_repositories SET status = 0 WHERE id = ?", ids["parked"])  # appears meanwhile
        return True

    report = stop_loop(Settings(rails_host="local", rails_runner=RUNNER),
                       StopLoopRequest("acme/web", mode="failed", settle=0.1), confirm=confirm)
    assert report.applied
    assert sorted(seen) == sorted([ids["stuck"], ids["ongoing"]])
    assert rows(db)[ids["parked"]]["status"] == 0  # not shown, not touched
    assert boots(db) == 2  # the documented price of an interactive yes


def wait_for(cond: Callable[[], object], timeout: float = 15.0) -> None:
    wait_until(cond, timeout)


def test_undo_defaults_to_the_journals_runner(lab_db: tuple[Path, str, dict[str, int]]) -> None:
    db, _version, _ids = lab_db
    before = dump(db)
    assert stop("--mode", "done", "--yes").exit_code == 0
    result = CliRunner().invoke(app, ["undo", "--yes", "-o", "json"])  # no --rails-host: the journal says local
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["exact"] is True
    assert dump(db) == before
