#!/usr/bin/env python3
"""Benchmark: instance-wide API scan, glcleanup vs the naive python-gitlab loop (design.md §10).

Builds a synthetic GitLab instance in a temporary lab database (nested groups, a realistic share
of projects in personal namespaces, thousands of container repositories, a few dozen stuck in
deletion), serves it with the lab's fake GitLab API at a per-request latency, and runs, in the same
process against the same server:

* naive: `gl.projects.list(iterator=True)`, then every project's `repositories.list(get_all=True)`;
* glcleanup: `glcleanup.gitlab.api.scan_repositories`.

Both must find the same stuck set. Prints requests and wall time of each and the ratios; exits 1
when the sets differ or the targets (>= 20x faster, >= 10x fewer requests) are missed.

    .venv/bin/python scripts/bench_scan.py            # 3,000 projects, 6,000 repositories, 20 ms
    .venv/bin/python scripts/bench_scan.py --quick    # 300 projects, 600 repositories
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gitlab

from glcleanup.gitlab import api as gitlab_api
from glcleanup.lab import schema
from glcleanup.lab.api import GitLabApiServer
from glcleanup.settings import Settings

TOKEN = "bench-admin-token"  # noqa: S105 - a lab token on loopback
STUCK = ("delete_scheduled", "delete_ongoing", "delete_failed")


@dataclass(frozen=True)
class Shape:
    top_groups: int
    subgroups: int  # per group, two levels deep
    users: int
    projects: int
    personal_share: float
    repositories: int
    with_registry_share: float
    stuck: int


FULL = Shape(top_groups=30, subgroups=3, users=700, projects=3000, personal_share=0.35, repositories=6000,
             with_registry_share=0.6, stuck=40)
QUICK = Shape(top_groups=6, subgroups=2, users=80, projects=300, personal_share=0.35, repositories=600,
              with_registry_share=0.6, stuck=12)


@dataclass
class Instance:
    projects: int
    personal: int
    groups: int
    repositories: int
    stuck: set[int]


class Builder:
    """Bulk rows with GitLab's tables and a route per namespace and project (full paths)."""

    def __init__(self, conn: sqlite3.Connection, rng: random.Random) -> None:
        self.conn = conn
        self.rng = rng
        self.now = schema.now_db()
        self.namespaces: list[tuple[object, ...]] = []
        self.routes: list[tuple[object, ...]] = []
        self.projects: list[tuple[object, ...]] = []
        self.repos: list[tuple[object, ...]] = []
        self.paths: dict[int, str] = {}

    def namespace(self, path: str, kind: str, parent: int | None) -> int:
        nid = len(self.namespaces) + 1
        full = f"{self.paths[-parent]}/{path}" if parent else path
        self.namespaces.append((nid, path, path, kind, parent, self.now, self.now))
        self.routes.append((nid, "Namespace", full, path))
        self.paths[-nid] = full
        return nid

    def project(self, namespace: int, path: str) -> int:
        pid = len(self.projects) + 1
        full = f"{self.paths[-namespace]}/{path}"
        self.projects.append((pid, path, path, namespace, self.now, self.now))
        self.routes.append((pid, "Project", full, path))
        self.paths[pid] = full
        return pid

    def repository(self, project: int, name: str, status: str | None) -> int:
        rid = len(self.repos) + 1
        self.repos.append((rid, project, name, self.now, self.now, schema.STATUS[status] if status else None,
                           self.now if status else None))
        return rid

    def flush(self) -> None:
        c = self.conn
        c.execute("BEGIN")
        c.executemany("INSERT INTO namespaces(id, name, path, type, parent_id, created_at, updated_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)", self.namespaces)
        c.executemany("INSERT INTO routes(source_id, source_type, path, name) VALUES (?, ?, ?, ?)", self.routes)
        c.executemany("INSERT INTO projects(id, name, path, namespace_id, created_at, updated_at) "
                      "VALUES (?, ?, ?, ?, ?, ?)", self.projects)
        c.executemany("INSERT INTO container_repositories(id, project_id, name, created_at, updated_at, status, "
                      "status_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", self.repos)
        c.execute("COMMIT")


def build(db: Path, shape: Shape, version: str, seed: int = 20261129) -> Instance:
    """A synthetic instance: nested groups, personal namespaces, repositories, a few stuck."""
    schema.create(db, version)
    conn = schema.connect(db)
    rng = random.Random(seed)
    b = Builder(conn, rng)
    conn.execute("INSERT INTO users(username, admin) VALUES ('root', 1)")
    groups: list[int] = []
    for t in range(shape.top_groups):
        top = b.namespace(f"org{t}", "Group", None)
        groups.append(top)
        for s in range(shape.subgroups):
            sub = b.namespace(f"team{s}", "Group", top)
            groups.append(sub)
            groups.extend(b.namespace(f"svc{k}", "Group", sub) for k in range(shape.subgroups - 1))
    users = [b.namespace(f"user{u}", "User", None) for u in range(shape.users)]
    conn.executemany("INSERT INTO users(username, admin) VALUES (?, 0)", [(f"user{u}",) for u in range(shape.users)])
    personal = int(shape.projects * shape.personal_share)
    project_ids = [b.project(rng.choice(users), f"sandbox{i}") for i in range(personal)]
    project_ids += [b.project(rng.choice(groups), f"app{i}") for i in range(shape.projects - personal)]
    with_registry = rng.sample(project_ids, int(len(project_ids) * shape.with_registry_share))
    counts = dict.fromkeys(with_registry, 1)
    for _ in range(shape.repositories - len(with_registry)):
        pid = rng.choice(with_registry)
        counts[pid] += 1
    stuck_at = set(rng.sample(range(1, shape.repositories + 1), shape.stuck))
    stuck: set[int] = set()
    for pid in sorted(counts):
        for k in range(counts[pid]):
            rid = len(b.repos) + 1
            status = rng.choice(STUCK) if rid in stuck_at else None
            b.repository(pid, "" if k == 0 else f"image{k}", status)
            if status:
                stuck.add(rid)
    b.flush()
    conn.close()
    return Instance(len(project_ids), personal, len(groups), len(b.repos), stuck)


def naive(url: str) -> set[int]:
    """What an admin writes first: every project, then every project's repositories."""
    gl = gitlab.Gitlab(url, private_token=TOKEN)
    found = set()
    for project in gl.projects.list(iterator=True):
        for repo in project.repositories.list(get_all=True):
            if getattr(repo, "status", None) in STUCK:
                found.add(int(repo.id))
    return found


def measure(server: GitLabApiServer, run: object) -> tuple[set[int], int, float]:
    assert callable(run)
    server.reset_counts()
    started = time.perf_counter()
    found = run()
    return found, server.request_count, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 300-project instance (seconds, for CI)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request (default 0.02)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--version", default="17.3.5", help="GitLab version the lab pretends to be")
    args = parser.parse_args(argv)
    shape = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="glcleanup-bench-") as tmp:
        db = Path(tmp) / "gitlab.db"
        inst = build(db, shape, args.version)
        print(f"instance: GitLab {args.version}, {inst.projects} projects ({inst.personal} in personal "
              f"namespaces), {inst.groups} groups, {inst.repositories} repositories, {len(inst.stuck)} stuck; "
              f"latency {args.latency * 1000:.0f} ms/request", flush=True)
        with GitLabApiServer(db, TOKEN, latency=args.latency) as server:
            gl = gitlab_api.connect(Settings(url=server.url, token=TOKEN))
            ours, ours_requests, ours_time = measure(server, lambda: {
                int(r["id"]) for r in gitlab_api.scan_repositories(gl, concurrency=args.concurrency,
                                                                   progress=lambda _done, _total: None).repositories})
            print(f"glcleanup scan_repositories: {ours_requests} requests, {ours_time:.2f} s, "
                  f"{len(ours)} stuck", flush=True)
            theirs, naive_requests, naive_time = measure(server, lambda: naive(server.url))
            print(f"naive python-gitlab loop:    {naive_requests} requests, {naive_time:.2f} s, "
                  f"{len(theirs)} stuck", flush=True)
    same = ours == theirs == inst.stuck
    fewer = naive_requests / max(ours_requests, 1)
    faster = naive_time / max(ours_time, 1e-9)
    met = same and fewer >= 10 and faster >= 20
    print(f"same stuck set: {'yes' if same else 'NO'}")
    print(f"ratio: {fewer:.1f}x fewer requests, {faster:.1f}x faster "
          f"(target >= 10x fewer, >= 20x faster: {'met' if met else 'NOT met'})")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
