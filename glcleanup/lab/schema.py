"""The lab's GitLab database: GitLab's table and column names, per GitLab version, in SQLite.

Only what the bundled scripts, the REST fake and the worker simulation touch is modelled.
Column sets follow `gitlab-deletion-internals.md` §1: `failed_deletion_count` and
`next_delete_attempt_at` exist from 17.5 on. Timestamps are stored the way ActiveRecord's
SQLite adapter stores them ('YYYY-MM-DD HH:MM:SS.ffffff', UTC) so Ruby and Python agree.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

# GitLab enums (app/models/container_repository.rb)
STATUS = {"delete_scheduled": 0, "delete_failed": 1, "delete_ongoing": 2}
STATUS_NAME = {v: k for k, v in STATUS.items()}
CLEANUP_STATUS = {"cleanup_unscheduled": 0, "cleanup_scheduled": 1, "cleanup_unfinished": 2, "cleanup_ongoing": 3}
SUPPORTED_VERSIONS = ("16.6.1", "17.3.5", "17.5.0", "17.6.0")
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
-- lab only (not a GitLab table): what Gitlab::VERSION and registry_api_url are in this lab
CREATE TABLE IF NOT EXISTS lab_settings (
  key varchar PRIMARY KEY NOT NULL,
  value varchar
);
"""


def connect(db_path: str | Path) -> sqlite3.Connection:
    """A connection that tolerates the runner, API and worker writing at the same time."""
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
        conn.executescript(BASE_DDL + _container_repositories_ddl(version))
        conn.execute("INSERT OR REPLACE INTO lab_settings(key, value) VALUES ('gitlab_version', ?)", (version,))
        conn.execute(
            "INSERT OR IGNORE INTO lab_settings(key, value) VALUES ('registry_api_url', ?)", (registry_api_url,)
        )
    finally:
        conn.close()


def setting(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM lab_settings WHERE key = ?", (key,)).fetchone()
    return row["value"] if row else default


def set_setting(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO lab_settings(key, value) VALUES (?, ?)", (key, value))
