"""A still lab database (no worker) for the stop-loop/undo tests: seeded rows, whole-database dumps, the CLI
against the real Ruby/ActiveRecord runner. Shared by the stop-loop, undo, fault and prompt test files."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from glcleanup.cli import app
from glcleanup.lab import schema, seed

LAB_RAILS = Path(__file__).parents[2] / "glcleanup" / "lab" / "rails" / "gitlab-rails"
RUNNER = f"{LAB_RAILS} runner"
VERSIONS = ("16.6.1", "17.3.5", "17.5.0", "17.6.0")


class PgDsn(str):
    """A PostgreSQL lab database: its DSN, with the lab directory as `parent` (logs, boots, a second db)."""

    parent: Path
    cluster: Any

    def __new__(cls, dsn: str, parent: Path, cluster: Any) -> PgDsn:
        obj = super().__new__(cls, dsn)
        obj.parent = parent
        obj.cluster = cluster
        return obj


def make_db(path: Path | str, version: str) -> dict[str, int]:
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


def dump(db: Path | str) -> str:
    """Every row of every table (and the sequences) as the database prints them."""
    if isinstance(db, PgDsn):
        conn = schema.connect(db)
        try:
            tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                                  "ORDER BY tablename")]
            lines = [f"{t}: {r[0]}" for t in tables
                     for r in conn.execute(f'SELECT "{t}"::text FROM "{t}" ORDER BY 1')]  # noqa: S608
            lines += [f"{r[0]}: {r[1]}" for r in conn.execute(
                "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1")]
            return "\n".join(lines)
        finally:
            conn.close()
    conn = sqlite3.connect(db)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def rows(db: Path | str, table: str = "container_repositories") -> dict[Any, dict[str, Any]]:
    conn = schema.connect(db)
    try:
        key = "project_id" if table == "container_expiration_policies" else "id"
        return {r[key]: dict(r) for r in conn.execute(f"SELECT * FROM {table}")}  # noqa: S608
    finally:
        conn.close()


def execute(db: Path | str, sql: str, *params: object) -> None:
    conn = schema.connect(db) if isinstance(db, PgDsn) else sqlite3.connect(db)
    if params:
        conn.execute(sql, params)
        conn.commit()
    else:
        conn.executescript(sql)
    conn.close()


# Every version on PostgreSQL (GitLab's database); SQLite (the demo's) on one version before and one after
# 17.5's retry columns, to keep CI inside its budget. tests/conftest.py's `lab_db` fixture takes these.
LAB_DB_PARAMS = [(v, "postgresql") for v in VERSIONS] + [(v, "sqlite") for v in ("17.3.5", "17.6.0")]


def lab_db_id(param: tuple[str, str]) -> str:
    return f"{param[0]}-{param[1]}"


def make_lab_db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> tuple[Path, str, dict[str, int]]:
    """A still lab database per version, on PostgreSQL (GitLab's database) and on SQLite."""
    version, database = request.param
    db: Path = tmp_path / "gitlab.sqlite3"
    monkeypatch.setenv("GLCLEANUP_LAB_DB", str(db))
    if database == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        db = PgDsn(cluster.create_database(), tmp_path, cluster)  # type: ignore[assignment]
        monkeypatch.setenv("GLCLEANUP_LAB_DATABASE_URL", str(db))
    ids = make_db(db, version)
    monkeypatch.setenv("GLCLEANUP_LAB_BOOT_LOG", str(tmp_path / "boots.log"))
    return db, version, ids


def boots(db: Path) -> int:
    log = db.parent / "boots.log"
    return log.read_text().count("\n") if log.exists() else 0


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--rails-host", "local", "--rails-runner", RUNNER, "-o", "json"])


def stop(*extra: str) -> Result:
    return cli("stop-loop", "--project", "acme/web", "--settle", "0.3", *extra)


