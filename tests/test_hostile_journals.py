"""Hostile class "journal": a journal is data, never a program (issue 13 §1).

A crafted or edited journal must never choose what runs (runner, host), never write a row outside
the journal's own changes and project, and never crash: every case below is refused with exit 2,
one line, the lab database byte-for-byte unchanged, and nothing the journal names executed. The
Ruby half runs on the lab's real Ruby + ActiveRecord runner, also called directly (as if the Python
checks were bypassed) to prove undo.rb refuses on its own.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from glcleanup.cli import app
from glcleanup.errors import UsageError
from glcleanup.gitlab.rails import RailsRunner
from glcleanup.journal.store import Journal
from glcleanup.journal.verify import MAX_JOURNAL_BYTES
from glcleanup.paths import journal_dir, journal_key_path
from glcleanup.transport import LocalHost
from tests.support.still_lab import RUNNER, dump, make_db

pytestmark = [pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing"), pytest.mark.timeout(120)]
VERSION = "17.6.0"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A lab database after a real `stop-loop --mode failed --disable-cleanup-policy --yes`: its journal."""
    db = tmp_path / "gitlab.sqlite3"
    ids = make_db(db, VERSION)
    monkeypatch.setenv("GLCLEANUP_LAB_DB", str(db))
    monkeypatch.setenv("GLCLEANUP_LAB_BOOT_LOG", str(tmp_path / "boots.log"))
    done = cli("stop-loop", "--project", "acme/web", "--mode", "failed", "--disable-cleanup-policy",
               "--settle", "0.1", "--yes")
    assert done.exit_code == 0, done.output
    path = Path(json.loads(done.stdout)["journal"])
    return {"db": db, "ids": ids, "journal": path, "data": json.loads(path.read_text()), "tmp": tmp_path}


def cli(*args: str, host: bool = True) -> Result:
    extra = ["--rails-host", "local", "--rails-runner", RUNNER] if host else []
    return CliRunner().invoke(app, [*args, *extra, "-o", "json"])


def boots(world: dict[str, Any]) -> int:
    log = world["tmp"] / "boots.log"
    return log.read_text().count("\n") if log.exists() else 0


def forge(world: dict[str, Any], data: dict[str, Any], name: str = "forged.json") -> Path:
    """A crafted journal signed with the real key: the strongest attacker (one who can sign) for the checks
    that come after the digest."""
    journal = Journal(journal_dir() / name, data)
    journal.save()
    return journal.path


def refused(result: Result, world: dict[str, Any], before: str, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("glcleanup: error:")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert text in result.stderr
    assert "Traceback" not in result.output
    assert dump(world["db"]) == before


# --- class: journal names a runner --------------------------------------------------------------------

@pytest.mark.parametrize("apply", [False, True], ids=["dry-run", "yes"])
@pytest.mark.parametrize("runner", ["sh -c 'touch {p}' sh", "touch {p}", "env X=1 touch {p}"])
def test_journal_runner_is_never_run(world: dict[str, Any], apply: bool, runner: str) -> None:
    """class journal/runner: the recorded rails_runner (and host) are shown, never executed."""
    pwned = world["tmp"] / "PWNED"
    data = copy.deepcopy(world["data"])
    data.update(rails_host="local", rails_runner=runner.format(p=pwned))
    path = forge(world, data)
    before, booted = dump(world["db"]), boots(world)
    result = cli("undo", str(path), *(["--yes"] if apply else []), host=False)
    refused(result, world, before, "undo runs only the runner your settings name")
    assert "--rails-host 'local'" in result.stderr
    assert not pwned.exists()
    assert boots(world) == booted
    # with the admin's settings, their runner runs (the journal's does not) and says where they differ
    ok = cli("undo", str(path))
    assert ok.exit_code == 0, ok.output
    assert not pwned.exists()
    assert any("using" in w and "settings" in w for w in json.loads(ok.stdout)["warnings"])


# --- class: journal rows outside the target -----------------------------------------------------------

def _foreign_change(world: dict[str, Any], data: dict[str, Any], action: str) -> None:
    outside = world["ids"]["outside"]
    row = dict(data["rows"][0], id=outside)
    data["changes"].append({"id": outside, "action": action, "path": "other/x"})
    data["rows"].append(row)


@pytest.mark.parametrize(("variant", "text"), [
    ("unknown_action", "unknown action 'foo'"),
    ("row_without_change", "which no change of this journal names"),
    ("id_as_string", "non-integer id"),
    ("foreign_project_row", "has project_id"),
    ("foreign_row_claimed", "belongs to another project"),
])
def test_foreign_rows_are_refused(world: dict[str, Any], variant: str, text: str) -> None:
    """class journal/foreign-rows: only rows of the journal's own changes, in its project, per the database."""
    data = copy.deepcopy(world["data"])
    outside = world["ids"]["outside"]
    if variant == "unknown_action":
        _foreign_change(world, data, "foo")
    elif variant == "row_without_change":
        data["rows"].append(dict(data["rows"][0], id=outside))
    elif variant == "id_as_string":
        data["changes"][0]["id"] = str(data["changes"][0]["id"])
    elif variant == "foreign_project_row":  # the row says it is the other project's
        _foreign_change(world, data, "park")
        data["rows"][-1]["project_id"] = data["rows"][-1]["project_id"] + 1
    else:  # the row claims acme/web, the database knows better
        _foreign_change(world, data, "park")
    before = dump(world["db"])
    refused(cli("undo", str(forge(world, data)), "--yes"), world, before, text)


@pytest.mark.parametrize(("variant", "text"), [
    ("other_projects_policy", "cleanup policy of project"),
    ("two_policies", "at most its project's"),
    ("unrecorded_column", "did not record"),
])
def test_foreign_policies_are_refused(world: dict[str, Any], variant: str, text: str) -> None:
    """class journal/foreign-policies: only the journal's project's own cleanup policy."""
    data = copy.deepcopy(world["data"])
    policy = data["policies"][0]
    if variant == "other_projects_policy":
        data["policies"] = [dict(policy, project_id=policy["project_id"] + 1)]
        data["policies_after"] = [dict(data["policies_after"][0], project_id=policy["project_id"] + 1)]
    elif variant == "two_policies":
        data["policies"] = [policy, dict(policy, project_id=policy["project_id"] + 1)]
    else:
        data["policies"] = [dict(policy, admin=True)]
    before = dump(world["db"])
    refused(cli("undo", str(forge(world, data)), "--yes"), world, before, text)


# --- class: journal values of the wrong type (Python shape check, then undo.rb on its own) -------------

@pytest.mark.parametrize(("mutate", "text"), [
    (lambda d: d.update(changes="all"), "'changes' must be a list"),
    (lambda d: d.update(rows={"id": 1}), "'rows' must be a list"),
    (lambda d: d.update(project={"id": "1; system('id')", "full_path": "acme/web"}), "field 'project'"),
    (lambda d: d.update(rails_runner=["sh"]), "'rails_runner' must be a string"),
    (lambda d: d.update(columns="id"), "list of column names"),
    (lambda d: d["rows"][0].update(name={"nested": 1}), "nested value"),
], ids=["changes-str", "rows-dict", "project-id-str", "runner-list", "columns-str", "nested-cell"])
def test_wrong_field_types_exit_2_not_a_traceback(world: dict[str, Any], mutate: Any, text: str) -> None:
    """class journal/wrong-types: a journal's shape is checked before anything boots."""
    data = copy.deepcopy(world["data"])
    mutate(data)
    before, booted = dump(world["db"]), boots(world)
    refused(cli("undo", str(forge(world, data)), "--yes"), world, before, text)
    assert boots(world) == booted


@pytest.mark.parametrize(("column", "value", "text"), [
    ("status", "delete_scheduled; DROP TABLE projects", "not a value of that column's type"),
    ("status", 99, "not a value of that column's type"),
    ("created_at", 5, "not a value of that column's type"),
    ("name", 123, "not a value of that column's type"),
    ("is_admin", True, "did not record"),
])
def test_undo_rb_refuses_values_on_its_own(world: dict[str, Any], column: str, value: Any, text: str) -> None:
    """class journal/wrong-types: undo.rb checks every value against the column's type, even when called
    directly with params that skipped every Python check."""
    data = copy.deepcopy(world["data"])
    data["rows"][0][column] = value
    params = {"journal": {k: data[k] for k in ("project", "columns", "policy_columns", "changes", "rows", "after",
                                                 "policies", "policies_after") if k in data}, "apply": True}
    before = dump(world["db"])
    with pytest.raises(UsageError, match=text):
        RailsRunner(LocalHost(), RUNNER).run("undo", params)
    assert dump(world["db"]) == before


def test_undo_rb_refuses_a_foreign_row_on_its_own(world: dict[str, Any]) -> None:
    """class journal/foreign-rows: the database decides the project, not the params (direct call)."""
    data = copy.deepcopy(world["data"])
    _foreign_change(world, data, "destroy")
    params = {"journal": {k: data[k] for k in ("project", "columns", "changes", "rows", "after") if k in data},
              "apply": True}
    before = dump(world["db"])
    with pytest.raises(UsageError, match="belongs to another project"):
        RailsRunner(LocalHost(), RUNNER).run("undo", params)
    assert dump(world["db"]) == before


def test_the_real_journal_still_undoes_and_the_plan_names_columns(world: dict[str, Any]) -> None:
    """The control: an untouched journal passes every check; the dry run lists every column it would write."""
    preview = cli("undo", str(world["journal"]))
    assert preview.exit_code == 0, preview.output
    restore = json.loads(preview.stdout)["restore"]
    parked = next(e for e in restore if e["id"] == world["ids"]["stuck"])
    assert "status" in parked["columns"]
    assert "status_updated_at" in parked["columns"]
    policy = next(e for e in restore if e["id"] is None)
    assert policy["columns"] == ["enabled"]
    done = cli("undo", str(world["journal"]), "--yes")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["exact"] is True


# --- class: journal edited (tamper evidence) ------------------------------------------------------------

def test_an_edited_journal_is_refused_and_called_edited(world: dict[str, Any]) -> None:
    """class journal/tampered: any byte changed after glcleanup wrote it shows."""
    path: Path = world["journal"]
    data = json.loads(path.read_text())
    data["rows"][0]["status"] = 2 if data["rows"][0]["status"] != 2 else 0  # a "small" edit of one value
    path.write_text(json.dumps(data))
    before = dump(world["db"])
    refused(cli("undo", str(path), "--yes"), world, before, "was EDITED after glcleanup wrote it")
    del data["digest"]
    path.write_text(json.dumps(data))
    refused(cli("undo", str(path), "--yes"), world, before, "has no glcleanup digest")


def test_a_journal_key_others_can_read_is_refused(world: dict[str, Any]) -> None:
    """class journal/tampered: the key is 0600 and the owner's, or nothing is trusted."""
    key = journal_key_path()
    assert (key.stat().st_mode & 0o777) == 0o600
    key.chmod(0o644)
    result = cli("undo", str(world["journal"]), "--yes")
    assert result.exit_code == 3
    assert "mode 0600" in result.stderr


# --- class: journal is not a file, or huge ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "huge-sparse", "huge-json"])
def test_non_regular_and_huge_files_are_refused_before_reading(world: dict[str, Any], kind: str) -> None:
    """class journal/size: a FIFO does not hang, /dev/zero does not eat memory (bounded by a deadline)."""
    target = world["tmp"] / f"journal-{kind}"
    writer: threading.Thread | None = None
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dev-zero":
        target = Path("/dev/zero")
    elif kind == "directory":
        target.mkdir()
    elif kind == "huge-sparse":
        with target.open("wb") as fh:
            fh.truncate(MAX_JOURNAL_BYTES * 64)
    else:
        target.write_text('{"format": 1, "changes": [], "pad": "' + "x" * (MAX_JOURNAL_BYTES + 10) + '"}')
    before = dump(world["db"])
    started = time.monotonic()
    result = cli("undo", str(target), "--yes")
    assert time.monotonic() - started < 3.0
    if writer is not None:
        writer.join(1)
    text = "more than a journal can be" if kind.startswith("huge") else "not a regular file"
    refused(result, world, before, text)


def test_an_edited_newest_journal_is_not_passed_over_for_an_older_one(world: dict[str, Any]) -> None:
    """class journal/tampered: `undo` without a path must not silently undo an older run instead."""
    older = forge(world, copy.deepcopy(world["data"]), name="00000000T000000000000Z-older.json")
    assert older.exists()
    path: Path = world["journal"]
    data = json.loads(path.read_text())
    data["mode"] = "done"
    path.write_text(json.dumps(data))
    before = dump(world["db"])
    refused(cli("undo", "--yes"), world, before, "was EDITED after glcleanup wrote it")
