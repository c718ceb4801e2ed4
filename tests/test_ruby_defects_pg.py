"""The seven defects of issue 8, each against the real runner (Ruby + ActiveRecord) on PostgreSQL.

Each test failed on the scripts as they were (commit 18270af) and passes now: the lab behaves as GitLab
does where the old scripts went wrong (query cache on Rails >= 7.1, ON CONFLICT DO NOTHING, row locks,
the token behind #location, a lagging replica, Geo's deleted events, enum mappings).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from glcleanup.errors import GlcleanupError
from glcleanup.gitlab.rails import script_source
from glcleanup.lab import schema
from glcleanup.lab.lab import make_registry_key
from glcleanup.ops.stop_loop import StopLoopReport, StopLoopRequest, stop_loop
from glcleanup.ops.undo import undo
from glcleanup.settings import Settings
from tests.support.net import wait_until
from tests.support.still_lab import RUNNER, cli, make_db, rows

psycopg = pytest.importorskip("psycopg")
pytestmark = [pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing"), pytest.mark.timeout(120)]
SCRIPTS = Path(__file__).parents[1] / "glcleanup" / "gitlab" / "ruby"
SETTINGS = Settings(rails_host="local", rails_runner=RUNNER)


@pytest.fixture
def pg_lab(tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, int]]:
    """A still lab database on PostgreSQL for `version`, with the registry signing key unless told not to."""

    def make(version: str = "17.3.5", key: bool = True, **lab_settings: str) -> dict[str, int]:
        ids = make_db(pg_database, version)  # type: ignore[arg-type]
        conn = schema.connect(pg_database)
        try:
            if key:
                make_registry_key(tmp_path / "registry.key")
                schema.set_setting(conn, "registry_key_path", str(tmp_path / "registry.key"))
            for name, value in lab_settings.items():
                schema.set_setting(conn, name, value)
        finally:
            conn.close()
        return ids

    monkeypatch.setenv("GLCLEANUP_LAB_DB", str(tmp_path / "gitlab.sqlite3"))  # the lab dir: logs, key
    monkeypatch.setenv("GLCLEANUP_LAB_DATABASE_URL", pg_database)
    return make


@pytest.fixture
def holder(pg_database: str) -> Iterator[Any]:
    """A second session, playing the worker that holds a row lock mid-transaction."""
    conn = psycopg.connect(pg_database)
    yield conn
    conn.close()


def waiting_on_a_lock(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock'").fetchone()
    return bool(row and row[0])


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except GlcleanupError as exc:
            out["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


# 1 ---------------------------------------------------------------------------------------------------------
def test_verify_reads_uncached_under_the_rails_7_1_query_cache(pg_lab: Callable[..., dict[str, int]],
                                                               pg_database: str) -> None:
    """18.x runs on Rails >= 7.1: the verify loop's repeated SELECT must see a worker's write-back."""
    ids = pg_lab("18.2.0")
    request = StopLoopRequest(project="acme/web", repositories=[ids["stuck"]], mode="failed", settle=2.0, apply=True)
    thread, out = in_thread(lambda: stop_loop(SETTINGS, request))
    wait_until(lambda: rows(pg_database)[ids["stuck"]]["status"] == 1, timeout=30)
    with psycopg.connect(pg_database, autocommit=True) as conn:  # the worker's set_delete_scheduled_status
        conn.execute("UPDATE container_repositories SET status = 0, delete_started_at = NULL WHERE id = %s",
                     (ids["stuck"],))
    thread.join(60)
    report: StopLoopReport = out["value"]
    assert report.result["reapplied"], "the write-back was not seen (cached SELECT)"
    assert report.verified is True
    assert rows(pg_database)[ids["stuck"]]["status"] == 1


# 2 ---------------------------------------------------------------------------------------------------------
def test_undo_is_all_or_nothing_when_insert_all_skips_a_conflicting_row(
        pg_lab: Callable[..., dict[str, int]], pg_database: str, holder: Any) -> None:
    ids = pg_lab("17.3.5")
    report = stop_loop(SETTINGS, StopLoopRequest(project="acme/web", mode="done", settle=0.2, apply=True))
    assert report.applied
    assert report.journal
    gone = {ids["stuck"], ids["ongoing"]}
    assert not gone & set(rows(pg_database))
    # A repository re-created under the stuck one's name, committed only after undo's checks ran.
    web = rows(pg_database)[ids["fine"]]["project_id"]
    holder.execute("INSERT INTO container_repositories(project_id, name, created_at, updated_at) "
                   "VALUES (%s, '', now(), now())", (web,))
    thread, out = in_thread(lambda: undo(SETTINGS, report.journal, apply=True))
    wait_until(lambda: waiting_on_a_lock(pg_database), timeout=30)  # insert_all waits on the unique index
    holder.commit()
    thread.join(60)
    assert "error" in out, f"undo claimed success: {out.get('value')}"
    assert "rolled back" in str(out["error"])
    assert not gone & set(rows(pg_database)), "undo restored half of the rows"


# 3 ---------------------------------------------------------------------------------------------------------
def test_apply_locks_the_rows_and_journals_them_as_locked(pg_lab: Callable[..., dict[str, int]],
                                                          pg_database: str, holder: Any) -> None:
    ids = pg_lab("17.3.5")
    holder.execute("SELECT id FROM container_repositories WHERE id = %s FOR UPDATE", (ids["stuck"],))
    request = StopLoopRequest(project="acme/web", repositories=[ids["stuck"]], mode="failed", settle=0.2, apply=True)
    thread, out = in_thread(lambda: stop_loop(SETTINGS, request))
    wait_until(lambda: waiting_on_a_lock(pg_database), timeout=30)
    # The worker that held the row claims it (set_delete_ongoing_status) and commits.
    holder.execute("UPDATE container_repositories SET status = 2, delete_started_at = '2026-12-01 10:00:00.5+00' "
                   "WHERE id = %s", (ids["stuck"],))
    holder.commit()
    thread.join(60)
    report: StopLoopReport = out["value"]
    journal = json.loads(Path(str(report.journal)).read_text())
    row = next(r for r in journal["rows"] if int(r["id"]) == ids["stuck"])
    assert int(row["status"]) == 2, "the journal holds the row as read before the worker's commit"
    assert re.match(r"2026-12-01[ T]10:00:00\.5", str(row["delete_started_at"]))
    assert rows(pg_database)[ids["stuck"]]["status"] == 1


# 4 ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("disabled", [False, True])
def test_plan_needs_no_registry_key(pg_lab: Callable[..., dict[str, int]], disabled: bool) -> None:
    pg_lab("17.3.5", key=False, **({"registry_disabled": "true"} if disabled else {}))
    result = cli("stop-loop", "--project", "acme/web")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    assert plan
    expected = "example.com/acme/web" if disabled else "127.0.0.1:5000/acme/web"
    assert {p["location"] for p in plan if p["name"] == ""} == {expected}


# 5 ---------------------------------------------------------------------------------------------------------
def test_scan_reads_the_primary_not_a_lagging_replica(pg_lab: Callable[..., dict[str, int]],
                                                      pg_database: str) -> None:
    for version in ("17.3.5", "17.6.0"):  # Session.current / SessionMap.with_sessions
        ids = pg_lab(version, load_balancing="true")
        replica = psycopg.connect(pg_database)
        try:
            replica.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            snapshot = replica.execute("SELECT pg_export_snapshot()").fetchone()[0]
            with psycopg.connect(pg_database, autocommit=True) as conn:  # after the replica's point in time
                conn.execute("UPDATE lab_settings SET value = %s WHERE key = 'replica_snapshot'", (snapshot,))
                conn.execute("INSERT INTO lab_settings(key, value) SELECT 'replica_snapshot', %s WHERE NOT EXISTS "
                             "(SELECT 1 FROM lab_settings WHERE key = 'replica_snapshot')", (snapshot,))
                conn.execute("UPDATE container_repositories SET status = 0 WHERE id = %s", (ids["fine"],))
            result = cli("scan", "--source", "rails", "--project", "acme/web")
            assert result.exit_code in (0, 1), result.output
            found = {r["id"]: r["status"] for r in json.loads(result.stdout)["repositories"]}
            assert found.get(ids["fine"]) == "delete_scheduled", f"{version}: scan read the replica"
        finally:
            replica.close()
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("DROP TABLE container_repositories, container_expiration_policies, routes, projects, "
                         "namespaces, feature_gates, users, geo_events, lab_settings CASCADE")


# 6 ---------------------------------------------------------------------------------------------------------
def test_geo_primary_refuses_done_and_points_to_failed(pg_lab: Callable[..., dict[str, int]],
                                                       pg_database: str) -> None:
    ids = pg_lab("17.6.0", geo_role="primary")
    before = rows(pg_database)
    result = cli("stop-loop", "--project", "acme/web", "--mode", "done", "--settle", "0.2", "--yes")
    assert result.exit_code != 0
    assert "Geo primary" in result.output
    assert "--mode failed" in result.output
    assert rows(pg_database) == before
    assert rows(pg_database, "geo_events") == {}
    parked = cli("stop-loop", "--project", "acme/web", "--mode", "failed", "--settle", "0.2", "--yes")
    assert parked.exit_code == 0, parked.output
    assert rows(pg_database)[ids["stuck"]]["status"] == 1
    assert rows(pg_database, "geo_events") == {}


# 7 ---------------------------------------------------------------------------------------------------------
def test_status_sets_come_from_the_enum_mappings() -> None:
    """No script hands enum names (or a mix of names and integers) to where/update_columns."""
    mixed = re.compile(r"(where|update_columns)\((status|expiration_policy_cleanup_status): *(%[iw]|:\w|\[)")
    for script in SCRIPTS.glob("*.rb"):
        for number, line in enumerate(script.read_text().splitlines(), 1):
            if mixed.search(line) and not line.strip().startswith('"'):  # a console hint is text, not a query
                pytest.fail(f"{script.name}:{number}: {line.strip()}")


def test_unknown_state_names_are_refused(pg_lab: Callable[..., dict[str, int]]) -> None:
    pg_lab("17.3.5")
    prelude = script_source("ping").decode().split("# ping.rb")[0]
    body = "Glcleanup.main { |_p| Glcleanup.status_values('delete_later') }"
    proc = subprocess.run([*RUNNER.split(), "-"], input=prelude + "\n" + body + "\n", capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert 'unknown state \\"delete_later\\"' in proc.stdout
