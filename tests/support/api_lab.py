"""A lab database for the REST API tests: nested groups, a registry-disabled project, personal projects,
a few stuck rows; and the admin token the lab's API server accepts."""

from __future__ import annotations

from pathlib import Path

from glcleanup.lab import schema, seed

TOKEN = "lab-admin-token"


def build(db: Path, version: str = "17.3.5", *, group_projects: int = 45) -> tuple[dict[str, int], dict[str, int]]:
    """acme (nested) + a registry-disabled project + alice's personal projects; a few stuck rows."""
    schema.create(db, version)
    conn = schema.connect(db)
    projects: dict[str, int] = {}
    repos: dict[str, int] = {}
    try:
        conn.execute("BEGIN")  # one commit, not one fsync per row
        seed.create_user(conn, "root", admin=True)
        alice = seed.create_user(conn, "alice")
        platform = seed.ensure_group(conn, "acme/platform")
        for i in range(group_projects):
            pid = seed.create_project(conn, platform, f"svc{i}")
            projects[f"acme/platform/svc{i}"] = pid
            repos[f"acme/platform/svc{i}"] = seed.create_repository(conn, pid, "")
        web = seed.create_project(conn, seed.ensure_group(conn, "acme"), "website")
        projects["acme/website"] = web
        repos["acme/website/worker"] = seed.create_repository(conn, web, "worker", status="delete_scheduled")
        hidden = seed.create_project(conn, seed.ensure_group(conn, "acme/legacy"), "old")
        conn.execute("UPDATE projects SET container_registry_access_level = 0 WHERE id = ?", (hidden,))
        projects["acme/legacy/old"] = hidden
        repos["acme/legacy/old"] = seed.create_repository(conn, hidden, "", status="delete_scheduled")
        sandbox = seed.create_project(conn, alice, "sandbox")
        projects["alice/sandbox"] = sandbox
        for k in range(25):
            status = {3: "delete_failed", 24: "delete_ongoing"}.get(k)
            repos[f"alice/sandbox/img{k}"] = seed.create_repository(conn, sandbox, f"img{k}", status=status)
        projects["alice/empty"] = seed.create_project(conn, alice, "empty")
        ext = seed.ensure_group(conn, "zeta")
        projects["zeta/tools"] = seed.create_project(conn, ext, "tools")
        repos["zeta/tools"] = seed.create_repository(conn, projects["zeta/tools"], "", status="delete_ongoing")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return projects, repos
