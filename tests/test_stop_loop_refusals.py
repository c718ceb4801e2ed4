"""stop-loop and undo refusing on a still lab database: rows changed since, foreign ids, hostile input, the
project lock, an interactive yes for exactly the rows shown, a journal's runner never run, twice is one line."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.lab import schema
from glcleanup.ops.stop_loop import StopLoopRequest, stop_loop
from glcleanup.paths import journal_dir
from glcleanup.settings import Settings
from tests.support.net import wait_until
from tests.support.still_lab import RUNNER, PgDsn, boots, cli, dump, execute, make_db, rows, stop

pytestmark = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing")


def test_undo_refuses_when_rows_changed_since(lab_db: tuple[Path, str, dict[str, int]]) -> None:
    db, _version, ids = lab_db
    assert stop("--mode", "failed", "--yes").exit_code == 0
    execute(db, "UPDATE container_repositories SET status = 0 WHERE id = ?", ids["ongoing"])
    changed = dump(db)
    db2: Path | str = db.parent / "second.sqlite3"
    env = {"GLCLEANUP_LAB_DB": str(db2)}
    if isinstance(db, PgDsn):
        db2 = PgDsn(db.cluster.create_database(), db.parent, db.cluster)
        env = {"GLCLEANUP_LAB_DATABASE_URL": str(db2)}
    result = cli("undo", "--yes")
    assert result.exit_code == 3
    assert f"container repository {ids['ongoing']} changed since" in result.stderr
    assert dump(db) == changed

    # done mode: the removed row exists again under its name
    make_db(db2, _version)
    result = CliRunner().invoke(app, ["stop-loop", "--project", "acme/web", "--repository", str(ids["stuck"]),
                                      "--settle", "0.1", "--yes", "--rails-host", "local", "--rails-runner",
                                      RUNNER, "-o", "json"], env=env)
    assert result.exit_code == 0, result.output
    execute(db2, "INSERT INTO container_repositories(project_id, name, created_at, updated_at) SELECT "
                 "project_id, '', created_at, updated_at FROM container_repositories WHERE id = ?", ids["ongoing"])
    refused = CliRunner().invoke(app, ["undo", "--yes", "--rails-host", "local", "--rails-runner", RUNNER],
                                 env=env)
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
    assert foreign.exit_code == 2  # an input error, said once
    assert f"container repository {ids['outside']} does not belong to project acme/web" in foreign.stderr
    assert foreign.stderr.count("nothing was changed") == 1
    assert foreign.stderr.count("\n") == 1
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


def test_undo_never_runs_the_journals_runner(lab_db: tuple[Path, str, dict[str, int]]) -> None:
    """design.md §7.8: without a configured rails host undo names the journal's and runs nothing."""
    db, _version, _ids = lab_db
    assert stop("--mode", "done", "--yes").exit_code == 0
    after = dump(db)
    result = CliRunner().invoke(app, ["undo", "--yes", "-o", "json"])  # no --rails-host: refused
    assert result.exit_code == 2, result.output
    assert "--rails-host 'local'" in result.stderr
    assert dump(db) == after
    assert boots(db) == 1
    done = cli("undo", "--yes")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["exact"] is True


def test_stop_loop_twice_is_one_line(lab_db: tuple[Path, str, dict[str, int]]) -> None:
    db, _version, _ids = lab_db
    args = ["stop-loop", "--project", "other/x", "--settle", "0.1", "--yes", "--rails-host", "local",
            "--rails-runner", RUNNER]
    first = CliRunner().invoke(app, [*args, "-o", "json"], env={"GLCLEANUP_LAB_DB": str(db)})
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*args, "-o", "table"], env={"GLCLEANUP_LAB_DB": str(db)})
    assert again.exit_code == 0, again.output
    assert again.stdout.count("\n") == 1, again.stdout
    assert again.stdout.startswith("nothing to stop in other/x: no repository is in delete_scheduled/delete_ongoing")
    assert again.stderr == ""
