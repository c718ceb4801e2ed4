"""The lab's GitLab database: GitLab's table and column names, per GitLab version, in PostgreSQL
(as GitLab runs it) or SQLite (the embedded default for `glcleanup demo`).

Only what the bundled scripts, the REST fake and the worker simulation touch is modelled.
Column sets follow `gitlab-deletion-internals.md` §1: `failed_deletion_count` and
`next_delete_attempt_at` exist from 17.5 on. On PostgreSQL the types follow GitLab's
(`timestamp with time zone`, `smallint` enums, the unique index on (project_id, name)). A database is
named by a path (SQLite) or a `postgresql://` DSN; `connect()` gives the same interface for both
(`?` placeholders, rows indexable by name and position, timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff'
UTC text, booleans as 0/1), so the worker and the REST fake run unchanged on either.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

# GitLab enums (app/models/container_repository.rb)
STATUS = {"delete_scheduled": 0, "delete_failed": 1, "delete_ongoing": 2}
STATUS_NAME = {v: k for k, v in STATUS.items()}
CLEANUP_STATUS = {"cleanup_unscheduled": 0, "cleanup_scheduled": 1, "cleanup_unfinished": 2, "cleanup_ongoing": 3}
SUPPORTED_VERSIONS = ("16.6.1", "17.3.5", "17.5.0", "17.6.0", "18.2.0")
MAX_DELETION_FAILURES = 10


def version_tuple(version: str) -> tuple[int, int, int]:
    core = version.split("-")[0]
    parts = [int(p) for p in core.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def has_retry_columns(version: str) -> bool:
    """`failed_deletion_count`/`next_delete_attempt_at` exist from 17.5 (migration, milestone 17.5)."""
    return version_tuple(version) >= (17, 5, 0)


def has_rest_status(version: str) -> bool:
    """REST `status` on container repositories came with MR !138202 (~16.7)."""
    return version_tuple(version) >= (16, 7, 0)


def now_db() -> str:
    return format_ts(datetime.now(UTC))


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    text = text.replace("T", " ").rstrip("Z")
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    return datetime.strptime(text[:26], fmt).replace(tzinfo=UTC)


def _container_repositories_ddl(version: str) -> str:
    retry = (
        "  failed_deletion_count integer DEFAULT 0 NOT NULL,\n  next_delete_attempt_at datetime(6),\n"
        if has_retry_columns(version)
        else ""
    )
    return f"""
CREATE TABLE IF NOT EXISTS container_repositories (
  id integer PRIMARY KEY AUTOINCREMENT NOT NULL,
  project_id integer NOT NULL REFERENCES projects(id),
  name varchar NOT NULL,
  created_at datetime(6) NOT NULL,
  updated_at datetime(6) NOT NULL,
  status integer,
  expiration_policy_started_at datetime(6),
  expiration_policy_cleanup_status integer DEFAULT 0 NOT NULL,
  expiration_policy_completed_at datetime(6),
  last_cleanup_deleted_tags_count integer,
  status_updated_at datetime(6),
  delete_started_at datetime(6),
{retry}  migration_state varchar DEFAULT 'default' NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS index_container_repositories_on_project_id_and_name
  ON container_repositories (project_id, name);
CREATE INDEX IF NOT EXISTS index_container_repositories_on_status ON container_repositories (status);
"""


BASE_DDL = """
CREATE TABLE IF NOT EXISTS namespaces (
  id integer PRIMARY KEY AUTOINCREMENT NOT NULL,
  name varchar NOT NULL,
  path varchar NOT NULL,
  type varchar NOT NULL,               -- 'Group' or 'User' (personal namespace)
  parent_id integer REFERENCES namespaces(id),
  created_at datetime(6) NOT NULL,
  updated_at datetime(6) NOT NULL
);
CREATE TABLE IF NOT EXISTS routes (
  id integer PRIMARY KEY AUTOINCREMENT NOT NULL,
  source_id integer NOT NULL,
  source_type varchar NOT NULL,        -- 'Namespace' or 'Project'
  path varchar NOT NULL,
  name varchar
);
CREATE UNIQUE INDEX IF NOT EXISTS index_routes_on_path ON routes (path COLLATE NOCASE);
CREATE UNIQUE INDEX IF NOT EXISTS index_routes_on_source ON routes (source_type, source_id);
CREATE TABLE IF NOT EXISTS projects (
  id integer PRIMARY KEY AUTOINCREMENT NOT NULL,
  name varchar NOT NULL,
  path varchar NOT NULL,
  namespace_id integer NOT NULL REFERENCES namespaces(id),
  visibility_level integer DEFAULT 0 NOT NULL,
  container_registry_access_level integer DEFAULT 20 NOT NULL,
  archived boolean DEFAULT 0 NOT NULL,
  pending_delete boolean DEFAULT 0,
  created_at datetime(6) NOT NULL,
  updated_at datetime(6) NOT NULL
);
CREATE TABLE IF NOT EXISTS container_expiration_policies (
  project_id integer PRIMARY KEY NOT NULL REFERENCES projects(id),
  created_at datetime(6) NOT NULL,
  updated_at datetime(6) NOT NULL,
  next_run_at datetime(6),
  name_regex varchar,
  cadence varchar DEFAULT '1d' NOT NULL,
  older_than varchar,
  keep_n integer,
  enabled boolean DEFAULT 0 NOT NULL,
  name_regex_keep text
);
CREATE TABLE IF NOT EXISTS feature_gates (
  id integer PRIMARY KEY AUTOINCREMENT NOT NULL,
  feature_key varchar NOT NULL,
  key varchar NOT NULL,
  value varchar,
  created_at datetime(6) NOT NULL,
  updated_at datetime(6) NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
  id integer PRIMARY KEY AUTOINCREMENT NOT NULL,
  username varchar NOT NULL,
  admin boolean DEFAULT 0 NOT NULL
);
CREATE TABLE IF NOT EXISTS geo_events (
  id integer PRIMARY KEY AUTOINCREMENT NOT NULL,
  replicable_name varchar NOT NULL,
  event_name varchar NOT NULL,
  payload text,
  created_at datetime(6) NOT NULL
);
-- lab only (not a GitLab table): what Gitlab::VERSION and registry_api_url are in this lab
CREATE TABLE IF NOT EXISTS lab_settings (
  key varchar PRIMARY KEY NOT NULL,
  value varchar
);
"""


def _pg_container_repositories_ddl(version: str) -> str:
    """GitLab's column types (db/structure.sql); failed_deletion_count as migration
    20240918..._add_failed_deletion_count_and_next_delete_at_to_container_repositories (17.5) adds it."""
    retry = ("  failed_deletion_count integer DEFAULT 0 NOT NULL,\n"
             "  next_delete_attempt_at timestamp with time zone,\n") if has_retry_columns(version) else ""
    index = ("CREATE INDEX IF NOT EXISTS container_repositories_next_delete_attempt_at ON container_repositories "
             "(next_delete_attempt_at) WHERE status = 0;\n") if has_retry_columns(version) else ""
    return f"""
CREATE TABLE IF NOT EXISTS container_repositories (
  id serial PRIMARY KEY,
  project_id integer NOT NULL REFERENCES projects(id),
  name character varying NOT NULL,
  created_at timestamp with time zone NOT NULL,
  updated_at timestamp with time zone NOT NULL,
  status smallint,
  expiration_policy_started_at timestamp with time zone,
  expiration_policy_cleanup_status smallint DEFAULT 0 NOT NULL,
  expiration_policy_completed_at timestamp with time zone,
  last_cleanup_deleted_tags_count integer,
  status_updated_at timestamp with time zone,
  delete_started_at timestamp with time zone,
{retry}  migration_state text DEFAULT 'default' NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS index_container_repositories_on_project_id_and_name
  ON container_repositories (project_id, name);
CREATE INDEX IF NOT EXISTS index_container_repositories_on_status ON container_repositories (status);
{index}"""


PG_BASE_DDL = """
CREATE TABLE IF NOT EXISTS namespaces (
  id serial PRIMARY KEY,
  name character varying NOT NULL,
  path character varying NOT NULL,
  type character varying NOT NULL,
  parent_id integer REFERENCES namespaces(id),
  created_at timestamp with time zone NOT NULL,
  updated_at timestamp with time zone NOT NULL
);
CREATE TABLE IF NOT EXISTS routes (
  id serial PRIMARY KEY,
  source_id integer NOT NULL,
  source_type character varying NOT NULL,
  path character varying NOT NULL,
  name character varying
);
CREATE UNIQUE INDEX IF NOT EXISTS index_routes_on_path ON routes (path);
CREATE UNIQUE INDEX IF NOT EXISTS index_routes_on_lower_path ON routes (LOWER(path));
CREATE UNIQUE INDEX IF NOT EXISTS index_routes_on_source ON routes (source_type, source_id);
CREATE TABLE IF NOT EXISTS projects (
  id serial PRIMARY KEY,
  name character varying NOT NULL,
  path character varying NOT NULL,
  namespace_id integer NOT NULL REFERENCES namespaces(id),
  visibility_level integer DEFAULT 0 NOT NULL,
  container_registry_access_level integer DEFAULT 20 NOT NULL,
  archived boolean DEFAULT false NOT NULL,
  pending_delete boolean DEFAULT false,
  created_at timestamp with time zone NOT NULL,
  updated_at timestamp with time zone NOT NULL
);
CREATE TABLE IF NOT EXISTS container_expiration_policies (
  project_id integer PRIMARY KEY REFERENCES projects(id),
  created_at timestamp with time zone NOT NULL,
  updated_at timestamp with time zone NOT NULL,
  next_run_at timestamp with time zone,
  name_regex character varying,
  cadence character varying DEFAULT '1d' NOT NULL,
  older_than character varying,
  keep_n integer,
  enabled boolean DEFAULT false NOT NULL,
  name_regex_keep text
);
CREATE TABLE IF NOT EXISTS feature_gates (
  id serial PRIMARY KEY,
  feature_key character varying NOT NULL,
  key character varying NOT NULL,
  value character varying,
  created_at timestamp with time zone NOT NULL,
  updated_at timestamp with time zone NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
  id serial PRIMARY KEY,
  username character varying NOT NULL,
  admin boolean DEFAULT false NOT NULL
);
-- EE (Geo): what a primary publishes for its secondaries; the lab writes it on destroy where Geo is on
CREATE TABLE IF NOT EXISTS geo_events (
  id serial PRIMARY KEY,
  replicable_name character varying NOT NULL,
  event_name character varying NOT NULL,
  payload text,
  created_at timestamp with time zone NOT NULL
);
-- lab only (not a GitLab table): what Gitlab::VERSION and registry_api_url are in this lab
CREATE TABLE IF NOT EXISTS lab_settings (
  key character varying PRIMARY KEY,
  value character varying
);
"""


def is_postgres(db: str | Path) -> bool:
    return str(db).startswith(("postgresql:", "postgres:"))


class PgRow(dict[str, Any]):
    """A psycopg row that reads like sqlite3.Row: by name or by position."""

    def __getitem__(self, key: str | int) -> Any:  # type: ignore[override]
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


def _pg_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _pg_row_factory(cursor: Any) -> Any:
    names = [c.name for c in cursor.description or []]

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(zip(names, (_pg_value(v) for v in values), strict=True))

    return make


class PgConnection:
    """psycopg (autocommit, explicit BEGIN/COMMIT as with the sqlite3 connections) behind the sqlite3 API."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.raw = psycopg.connect(dsn, autocommit=True, row_factory=_pg_row_factory)
        self.raw.execute("SET TIME ZONE 'UTC'")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if sql.strip().upper() == "BEGIN IMMEDIATE":
            sql = "BEGIN"
        if params:
            sql = sql.replace("%", "%%").replace("?", "%s")
            return self.raw.execute(sql, [bool(p) if isinstance(p, bool) else p for p in params])  # type: ignore[arg-type]
        return self.raw.execute(sql)  # type: ignore[arg-type]

    def executescript(self, script: str) -> None:
        self.raw.execute(script)  # type: ignore[arg-type]

    def commit(self) -> None:
        """Autocommit: nothing pending (the sqlite3 call sites keep working)."""

    def close(self) -> None:
        self.raw.close()


def skip_locked(conn: sqlite3.Connection) -> str:
    """`FOR UPDATE SKIP LOCKED` where the database has row locks (next_pending_destruction); SQLite has none."""
    return " FOR UPDATE SKIP LOCKED" if isinstance(conn, PgConnection) else ""


def connect(db_path: str | Path) -> sqlite3.Connection:
    """A connection that tolerates the runner, API and worker writing at the same time.

    A `postgresql://` DSN gives a PgConnection with the same calls (typed as sqlite3's for the callers).
    """
    if is_postgres(db_path):
        return cast(sqlite3.Connection, PgConnection(str(db_path)))
    conn = sqlite3.connect(str(db_path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def create(db_path: str | Path, version: str, registry_api_url: str = "http://127.0.0.1:5000") -> None:
    """Create an empty GitLab database for `version` (idempotent for the same version)."""
    conn = connect(db_path)
    try:
        if is_postgres(db_path):
            conn.executescript(PG_BASE_DDL + _pg_container_repositories_ddl(version))
        else:
            conn.executescript(BASE_DDL + _container_repositories_ddl(version))
        set_setting(conn, "gitlab_version", version)
        conn.execute("INSERT INTO lab_settings(key, value) VALUES ('registry_api_url', ?) ON CONFLICT DO NOTHING",
                     (registry_api_url,))
    finally:
        conn.close()


def setting(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM lab_settings WHERE key = ?", (key,)).fetchone()
    return row["value"] if row else default


def set_setting(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT INTO lab_settings(key, value) VALUES (?, ?) "
                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
