"""stop-loop and undo on a still lab database (no worker): the real Ruby/ActiveRecord runner, whole-table
dumps before and after, rollback on a Ruby exception, one boot per command (the refusals are in
test_stop_loop_refusals.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glcleanup.lab import schema
from glcleanup.paths import journal_dir
from tests.support.still_lab import PgDsn, boots, cli, dump, execute, rows, stop

pytestmark = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing")


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
    again = cli("undo", "--yes")  # the newest applied, not yet undone journal: there is none left
    assert again.exit_code == 3
    assert again.stderr.startswith("glcleanup: error: no applied, not yet undone journal in ")
    assert again.stderr.count("\n") == 1
    twice = cli("undo", doc["journal"], "--yes")  # undoing twice: nothing to do, said once
    assert twice.exit_code == 0, twice.output
    assert json.loads(twice.stdout)["already_undone"] is True
    assert twice.stderr == ""
    assert dump(db) == before_dump
    assert boots(db) == 3  # stop-loop, undo preview, undo; the refused ones never booted


@pytest.mark.parametrize("mode", ["done", "failed"])
def test_ruby_exception_mid_apply_rolls_everything_back(lab_db: tuple[Path, str, dict[str, int]], mode: str) -> None:
    db, _version, ids = lab_db
    event = "DELETE" if mode == "done" else "UPDATE"
    if isinstance(db, PgDsn):
        execute(db, "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'glcleanup test: storage on fire'; END $$; "
                    f"CREATE TRIGGER boom BEFORE {event} ON container_repositories FOR EACH ROW "
                    f"WHEN (OLD.id = {ids['ongoing']}) EXECUTE FUNCTION boom();")
    else:
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
    assert "no applied, not yet undone journal" in nothing.stderr
