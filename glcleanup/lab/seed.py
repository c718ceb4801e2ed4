"""Fill the lab's GitLab database: groups (nested), users with personal namespaces, projects with
routes, container repositories, cleanup policies and feature flags.

Rows are written the way GitLab stores them (a `routes` row per namespace and project holding the
full path), so `Project.find_by_full_path` in the runner and the REST API resolve paths alike.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from glcleanup.lab import schema
from glcleanup.lab.registry import push_image


@dataclass
class SeededRepository:
    id: int
    project: str
    path: str
    tags: list[str] = field(default_factory=list)


@dataclass
class DemoInstance:
    """What `seed_demo` created, for the demo script and tests to refer to."""

    projects: dict[str, int] = field(default_factory=dict)
    repositories: list[SeededRepository] = field(default_factory=list)

    def repository(self, path: str) -> SeededRepository:
        return next(r for r in self.repositories if r.path == path)


def _route(conn: sqlite3.Connection, source_type: str, source_id: int, path: str, name: str) -> None:
    conn.execute("INSERT INTO routes(source_id, source_type, path, name) VALUES (?, ?, ?, ?)",
                 (source_id, source_type, path, name))


def route_path(conn: sqlite3.Connection, source_type: str, source_id: int) -> str:
    row = conn.execute("SELECT path FROM routes WHERE source_type = ? AND source_id = ?",
                       (source_type, source_id)).fetchone()
    if row is None:
        raise LookupError(f"no route for {source_type} {source_id}")
    return str(row["path"])


def namespace_id(conn: sqlite3.Connection, full_path: str) -> int | None:
    row = conn.execute("SELECT source_id FROM routes WHERE source_type = 'Namespace' AND LOWER(path) = LOWER(?)",
                       (full_path,)).fetchone()
    return int(row["source_id"]) if row else None


def create_group(conn: sqlite3.Connection, path: str, name: str | None = None,
                 parent_id: int | None = None) -> int:
    """One group level; `path` is the last segment, the route gets the full path."""
    now = schema.now_db()
    cur = conn.execute(
        "INSERT INTO namespaces(name, path, type, parent_id, created_at, updated_at) "
        "VALUES (?, ?, 'Group', ?, ?, ?) RETURNING id", (name or path, path, parent_id, now, now))
    gid = int(cur.fetchone()[0])
    full = f"{route_path(conn, 'Namespace', parent_id)}/{path}" if parent_id else path
    _route(conn, "Namespace", gid, full, name or path)
    return gid


def ensure_group(conn: sqlite3.Connection, full_path: str) -> int:
    """Create every missing level of `a/b/c` and return the id of the deepest group."""
    parent: int | None = None
    walked: list[str] = []
    for part in full_path.strip("/").split("/"):
        walked.append(part)
        existing = namespace_id(conn, "/".join(walked))
        parent = existing if existing is not None else create_group(conn, part, parent_id=parent)
    if parent is None:
        raise ValueError("empty group path")
    return parent


def create_user(conn: sqlite3.Connection, username: str, admin: bool = False) -> int:
    """A user and its personal namespace (type 'User'); returns the namespace id."""
    now = schema.now_db()
    conn.execute("INSERT INTO users(username, admin) VALUES (?, ?)", (username, bool(admin)))
    cur = conn.execute(
        "INSERT INTO namespaces(name, path, type, parent_id, created_at, updated_at) "
        "VALUES (?, ?, 'User', NULL, ?, ?) RETURNING id", (username, username, now, now))
    nid = int(cur.fetchone()[0])
    _route(conn, "Namespace", nid, username, username)
    return nid


def create_project(conn: sqlite3.Connection, namespace: int, path: str, name: str | None = None) -> int:
    now = schema.now_db()
    cur = conn.execute(
        "INSERT INTO projects(name, path, namespace_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
        (name or path, path, namespace, now, now))
    pid = int(cur.fetchone()[0])
    _route(conn, "Project", pid, f"{route_path(conn, 'Namespace', namespace)}/{path}", name or path)
    return pid


def create_repository(conn: sqlite3.Connection, project_id: int, name: str = "",
                      status: str | None = None, cleanup_status: str = "cleanup_unscheduled") -> int:
    now = schema.now_db()
    cur = conn.execute(
        "INSERT INTO container_repositories(project_id, name, created_at, updated_at, status, "
        "status_updated_at, expiration_policy_cleanup_status) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (project_id, name, now, now, schema.STATUS[status] if status else None, now if status else None,
         schema.CLEANUP_STATUS[cleanup_status]))
    return int(cur.fetchone()[0])


def repository_path(conn: sqlite3.Connection, repository_id: int) -> str:
    """GitLab's ContainerRepository#path: project full path plus '/name', downcased."""
    row = conn.execute("SELECT project_id, name FROM container_repositories WHERE id = ?",
                       (repository_id,)).fetchone()
    project = route_path(conn, "Project", int(row["project_id"]))
    return "/".join(p for p in (project, row["name"]) if p).lower()


def create_policy(conn: sqlite3.Connection, project_id: int, enabled: bool = True, cadence: str = "1d",
                  keep_n: int | None = 10, older_than: str | None = "90d",
                  name_regex: str | None = ".*") -> None:
    now = schema.now_db()
    conn.execute(
        "INSERT INTO container_expiration_policies(project_id, created_at, updated_at, "
        "next_run_at, name_regex, cadence, older_than, keep_n, enabled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(project_id) DO UPDATE SET updated_at = excluded.updated_at, next_run_at = excluded.next_run_at, "
        "name_regex = excluded.name_regex, cadence = excluded.cadence, older_than = excluded.older_than, "
        "keep_n = excluded.keep_n, enabled = excluded.enabled",
        (project_id, now, now, now, name_regex, cadence, older_than, keep_n, bool(enabled)))


def set_feature(conn: sqlite3.Connection, name: str, enabled: bool = True) -> None:
    """A Flipper boolean gate, as `Feature.enable(:name)` writes it."""
    now = schema.now_db()
    conn.execute("DELETE FROM feature_gates WHERE feature_key = ? AND key = 'boolean'", (name,))
    conn.execute("INSERT INTO feature_gates(feature_key, key, value, created_at, updated_at) "
                 "VALUES (?, 'boolean', ?, ?, ?)", (name, "true" if enabled else "false", now, now))


# (project full path, repository names, tags pushed to each)
DEMO_LAYOUT: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("acme/platform/api", ("", "worker"), ("latest", "v1.4.2")),
    ("acme/platform/billing", ("",), ("latest",)),
    ("acme/website", ("",), ("latest", "2026-11-28")),
    ("alice/sandbox", ("",), ("latest",)),
)


def seed_demo(db: str | Path, registry_url: str, *, verify: bool | str = True) -> DemoInstance:
    """A small believable instance: nested groups, a personal project, images in the real registry."""
    conn = schema.connect(db)
    out = DemoInstance()
    try:
        create_user(conn, "root", admin=True)
        alice = create_user(conn, "alice")
        for project_path, names, tags in DEMO_LAYOUT:
            group, _, leaf = project_path.rpartition("/")
            ns = alice if group == "alice" else ensure_group(conn, group)
            pid = create_project(conn, ns, leaf)
            out.projects[project_path] = pid
            for name in names:
                rid = create_repository(conn, pid, name)
                repo = SeededRepository(rid, project_path, repository_path(conn, rid), list(tags))
                for tag in tags:
                    push_image(registry_url, repo.path, tag, verify=verify)
                out.repositories.append(repo)
        create_policy(conn, out.projects["acme/website"], enabled=True)
        create_policy(conn, out.projects["acme/platform/api"], enabled=False)
    finally:
        conn.close()
    return out
