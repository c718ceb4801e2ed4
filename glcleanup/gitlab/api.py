"""GitLab API reads: connect with python-gitlab, the server version, and which container repositories
are in a deletion state, instance-wide or narrowed to projects or a group.

GitLab has no instance-wide list of repositories, and the naive walk (every project, then its
repositories) costs one request per project. This module instead:

* lists top-level groups and reads `GET /groups/:id/registry/repositories` (subgroups included,
  100 a page, pages fetched in parallel): cost proportional to repositories, not projects;
* lists projects once (`simple`, 100 a page) only to find those in personal namespaces, which no
  group covers, and reads their repositories through GraphQL in batches of 100 projects
  (`Query.projects(ids:)` → `containerRepositories { status }`, GitLab ≥ 13.6), so empty personal
  projects cost nothing;
* on GitLab < 16.7, whose REST entity has no `status` (MR !138202), reads groups through GraphQL
  too, where `status` exists; when GraphQL answers an error or lacks a field, falls back to REST and
  reports `unknown` where REST cannot tell.

Never asks for `tags`/`tags_count` (GitLab would call the possibly broken registry for each
repository). python-gitlab honours 429 `Retry-After` (`obey_rate_limit`). Progress goes to a
callback (the CLI draws a bar with it); nothing is printed.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import gitlab
import requests
from requests.adapters import HTTPAdapter

from glcleanup import __version__, gitlab_facts
from glcleanup.errors import ApiError, AuthError, ConnectError, Forbidden, GraphQLUnavailable, NotFoundError
from glcleanup.gitlab_facts import DELETION_STATES
from glcleanup.settings import Settings, redact

STUCK_STATES = DELETION_STATES
UNKNOWN = "unknown"
PER_PAGE = 100  # GitLab's maximum for offset pagination and GraphQL connections
GRAPHQL_PROJECT_BATCH = 100
GRAPHQL_REPOS_PER_PROJECT = 20  # most projects have fewer; the rest are paged separately

Progress = Callable[[int, int | None], None]  # (requests done, requests planned so far)
T = TypeVar("T")

REPO_FIELDS = "id name path status location createdAt"
PROJECTS_QUERY = (
    "query($ids: [ID!], $first: Int, $repos: Int) { projects(ids: $ids, first: $first) { nodes { id fullPath "
    "containerRepositories(first: $repos) { pageInfo { hasNextPage endCursor } nodes { " + REPO_FIELDS + " } } "
    "} } }"
)
PROJECT_REPOS_QUERY = (
    "query($path: ID!, $after: String) { project(fullPath: $path) { id fullPath containerRepositories("
    "first: 100, after: $after) { pageInfo { hasNextPage endCursor } nodes { " + REPO_FIELDS + " } } } }"
)
GROUP_REPOS_QUERY = (
    "query($path: ID!, $after: String) { group(fullPath: $path) { containerRepositories(first: 100, "
    "after: $after) { pageInfo { hasNextPage endCursor } nodes { " + REPO_FIELDS + " project { id fullPath } "
    "} } } }"
)


@dataclass
class ApiScan:
    """Rows in a deletion state (or `unknown` where the API cannot tell), and what it cost."""

    repositories: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    warnings: list[str] = field(default_factory=list)
    version: str = ""
    graphql: bool = False  # GraphQL answered at least one query


@dataclass(frozen=True)
class Listing:
    """A paginated REST listing; `keyset` when the endpoint supports `pagination=keyset` by id."""

    path: str
    params: dict[str, Any] = field(default_factory=dict)
    keyset: bool = False


@dataclass(frozen=True)
class ProjectRef:
    id: int
    path: str
    personal: bool = False


# --------------------------------------------------------------------------- connecting




@contextmanager
def api_errors(url: str, token: str | None = None) -> Iterator[None]:
    """Turn python-gitlab and requests failures into glcleanup's errors (exit 3), token redacted."""
    try:
        yield
    except gitlab.exceptions.GitlabAuthenticationError as exc:
        raise AuthError(f"GitLab at {url} refused the token (401): check GITLAB_PRIVATE_TOKEN") from exc
    except gitlab.exceptions.GitlabHttpError as exc:
        if exc.response_code == 403:
            raise Forbidden(redact(f"GitLab at {url} answered 403 Forbidden: {exc.error_message}", token)) from exc
        if exc.response_code == 404:
            raise NotFoundError(redact(f"GitLab at {url}: {exc.error_message}", token)) from exc
        raise ApiError(redact(f"GitLab at {url} answered {exc.response_code}: {exc.error_message}", token)) from exc
    except requests.exceptions.SSLError as exc:
        raise ConnectError(f"TLS error talking to {url}: {redact(str(exc), token)} (see GITLAB_SSL_VERIFY)") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise ConnectError(f"cannot reach GitLab at {url}: {_reason(exc, token)}") from exc


def _reason(exc: Exception, token: str | None) -> str:
    """The innermost, shortest useful cause ("Connection refused"), never the token."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                   "Temporary failure in name resolution"):
        if marker in text:
            return marker
    return redact(text, token)[:200]


def connect(settings: Settings, *, timeout: float = 30.0) -> gitlab.Gitlab:
    """An authenticated python-gitlab client from Settings (ConfigError/AuthError/ConnectError otherwise)."""
    url, token = settings.require_api()
    gl = gitlab.Gitlab(url, private_token=token, ssl_verify=settings.ssl_verify, timeout=timeout,
                       user_agent=f"glcleanup/{__version__} {gitlab.const.USER_AGENT}")
    with api_errors(url, token):
        gl.auth()
    return gl


def server_version(gl: gitlab.Gitlab) -> str:
    """`GET /version` (python-gitlab's `version()` hides failures as 'unknown'; we want them raised)."""
    with api_errors(gl.url, gl.private_token):
        data = gl.http_get("/version")
    if not isinstance(data, dict) or "version" not in data:
        raise ApiError(f"GitLab at {gl.url} answered /version without a version")
    return str(data["version"])


def is_admin(gl: gitlab.Gitlab) -> bool:
    user = getattr(gl, "user", None)
    return bool(getattr(user, "is_admin", False)) if user is not None else False


# --------------------------------------------------------------------------- progress


class Tracker:
    """Counts planned and finished requests for the progress callback (thread-safe).

    A callback with a `phase(text)` attribute (like the rich bar's) is also told what is being read.
    """

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.planned = 0
        self.done = 0
        self.phase = "starting"
        self._lock = threading.Lock()

    def plan(self, count: int, phase: str | None = None) -> None:
        with self._lock:
            self.planned += count
            self.phase = phase or self.phase
        self._emit()

    def finish(self, count: int = 1) -> None:
        with self._lock:
            self.done += count
            self.planned = max(self.planned, self.done)
        self._emit()

    def _emit(self) -> None:
        if self.progress is None:
            return
        describe = getattr(self.progress, "phase", None)
        if callable(describe):
            describe(self.phase)
        self.progress(self.done, self.planned)


# --------------------------------------------------------------------------- the scanner


class Scanner:
    """One scan: a thread pool, a request counter on the session, and the rows found so far."""

    def __init__(self, gl: gitlab.Gitlab, concurrency: int, progress: Progress | None) -> None:
        self.gl = gl
        self.concurrency = max(1, concurrency)
        self.tracker = Tracker(progress)
        self.result = ApiScan()
        self.rest_status = True
        self.graphql_ok = True
        self._rows: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._requests = 0
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="glcleanup-api")

    # ---- plumbing

    def __enter__(self) -> Scanner:
        session = self.gl.session
        if self.concurrency > 10:  # requests keeps 10 connections per host by default
            for prefix in ("http://", "https://"):
                session.mount(prefix, HTTPAdapter(pool_connections=10, pool_maxsize=self.concurrency))
        session.hooks["response"].append(self._count)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        hooks = self.gl.session.hooks["response"]
        if self._count in hooks:
            hooks.remove(self._count)
        self.result.requests = self._requests

    def _count(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        with self._lock:
            self._requests += 1

    def run_all(self, thunks: Iterable[Callable[[], T]], phase: str) -> list[T]:
        """Run thunks on the pool and wait; only ever called from the scanning thread (no nested waits)."""
        jobs = list(thunks)
        if not jobs:
            return []
        self.tracker.plan(0, phase)
        futures = [self._pool.submit(job) for job in jobs]
        return [f.result() for f in futures]

    def get(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        with api_errors(self.gl.url, self.gl.private_token):
            response = self.gl.http_request("get", path, query_data=params or {})
        self.tracker.finish()
        return response

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """POST /api/graphql; any error, HTTP failure or missing data raises GraphQLUnavailable."""
        if not self.graphql_ok:
            raise GraphQLUnavailable("GraphQL failed earlier in this scan")
        try:
            with api_errors(self.gl.url, self.gl.private_token):
                answer = self.gl.http_post(f"{self.gl.url}/api/graphql",
                                           post_data={"query": query, "variables": variables})
        except (ApiError, NotFoundError, Forbidden) as exc:  # 401 still raises: the token is wrong
            raise self.graphql_failed(str(exc)) from exc
        finally:
            self.tracker.finish()
        if not isinstance(answer, dict) or answer.get("errors") or not isinstance(answer.get("data"), dict):
            errors = answer.get("errors") if isinstance(answer, dict) else None
            message = errors[0].get("message", "error") if errors else "no data"
            raise self.graphql_failed(str(message))
        self.result.graphql = True
        data: dict[str, Any] = answer["data"]
        return data

    def graphql_failed(self, message: str) -> GraphQLUnavailable:
        """Stop using GraphQL for the rest of the scan (warn once) and return the exception to raise."""
        with self._lock:
            first = self.graphql_ok
            self.graphql_ok = False
        if first:
            self.warn(f"GraphQL unavailable ({message}); fell back to REST")
        return GraphQLUnavailable(message)

    def warn(self, message: str) -> None:
        with self._lock:
            if message not in self.result.warnings:
                self.result.warnings.append(message)

    def same_base(self, url: str) -> str:
        """Follow `Link` URLs on the configured base URL, even when GitLab's external_url differs."""
        _head, sep, tail = url.partition("/api/v4/")
        return f"{self.gl.api_url}/{tail}" if sep else url

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for row in rows:
                if row["status"] in STUCK_STATES or row["status"] == UNKNOWN:
                    self._rows.setdefault(int(row["id"]), row)

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self._rows.values(), key=lambda r: (r["project"], r["path"], r["id"]))

    # ---- REST pagination

    def first_page(self, path: str, params: dict[str, Any]) -> tuple[list[Any], int | None, requests.Response]:
        response = self.get(path, {**params, "per_page": PER_PAGE, "page": 1})
        pages = response.headers.get("X-Total-Pages")
        return list(response.json()), int(pages) if pages and pages.isdigit() else None, response

    def rest_pages(self, path: str, params: dict[str, Any]) -> list[Any]:
        """Every page, sequentially (inside a pool task): follows `Link: rel=next` like python-gitlab."""
        items, _pages, response = self.first_page(path, params)
        return items + self._follow(response)

    def rest_listings(self, listings: list[Listing], phase: str) -> list[list[Any]]:
        """Several paginated listings, page 1 of each in parallel, then all remaining pages in parallel.

        Without `x-total-pages` (GitLab omits it above 10,000 rows) a listing continues sequentially:
        by keyset when the endpoint offers it (offset pagination of projects stops at 50,000), else
        by following `Link: rel=next`.
        """
        self.tracker.plan(len(listings), phase)
        firsts = self.run_all([partial(self.first_page, lst.path, lst.params) for lst in listings], phase)
        rest: list[Callable[[], list[Any]]] = []
        owners: list[int] = []
        for index, (lst, (items, pages, response)) in enumerate(zip(listings, firsts, strict=True)):
            if pages is None and "next" in response.links:
                rest.append(partial(self._keyset, lst, items) if lst.keyset and items
                            else partial(self._follow, response))
                owners.append(index)
                continue
            for page in range(2, (pages or 1) + 1):
                rest.append(partial(self.page, lst.path, lst.params, page))
                owners.append(index)
        self.tracker.plan(len(rest))
        out = [list(items) for items, _pages, _response in firsts]
        for index, items in zip(owners, self.run_all(rest, phase), strict=True):
            out[index].extend(items)
        return out

    def _keyset(self, listing: Listing, first: list[Any]) -> list[Any]:
        """Continue an `order_by=id&sort=asc` listing after its first page with keyset pagination."""
        self.tracker.plan(1)
        params = {**listing.params, "pagination": "keyset", "order_by": "id", "sort": "asc",
                  "per_page": PER_PAGE, "id_after": first[-1]["id"]}
        response = self.get(listing.path, params)
        return list(response.json()) + self._follow(response)

    def page(self, path: str, params: dict[str, Any], number: int) -> list[Any]:
        return list(self.get(path, {**params, "per_page": PER_PAGE, "page": number}).json())

    def get_json(self, path: str) -> Any:
        return self.get(path).json()

    def _follow(self, response: requests.Response) -> list[Any]:
        items: list[Any] = []
        while "next" in response.links:
            self.tracker.plan(1)
            response = self.get(self.same_base(response.links["next"]["url"]))
            items.extend(response.json())
        return items


# --------------------------------------------------------------------------- row shapes


def rest_row(item: dict[str, Any], project: str | None, rest_status: bool) -> dict[str, Any]:
    """A REST repository entity as glcleanup's row; `unknown` when the entity has no status field."""
    status = item.get("status") if rest_status and "status" in item else UNKNOWN
    return {
        "id": int(item["id"]), "project": project or _project_from_path(item), "path": item.get("path"),
        "name": item.get("name"), "status": status, "project_id": item.get("project_id"),
        "location": item.get("location"), "created_at": item.get("created_at"), "sources": ["api"],
    }


def graphql_row(node: dict[str, Any], project_id: int, project: str) -> dict[str, Any]:
    status = node.get("status")
    return {
        "id": _gid(node["id"]), "project": project, "path": node.get("path"), "name": node.get("name"),
        "status": status.lower() if isinstance(status, str) else None, "project_id": project_id,
        "location": node.get("location"), "created_at": _rest_time(node.get("createdAt")), "sources": ["api"],
    }


def _rest_time(value: Any) -> Any:
    """GraphQL's `2024-01-10T13:39:08Z` in REST's shape (`...08.000Z`), so rows from both sources match."""
    if isinstance(value, str) and len(value) == 20 and value.endswith("Z") and value[10] == "T":
        return value[:-1] + ".000Z"
    return value


def _gid(value: Any) -> int:
    return int(str(value).rsplit("/", 1)[-1])


def _project_from_path(item: dict[str, Any]) -> str:
    """Last resort: the repository path minus its name (downcased, as GitLab stores repository paths)."""
    path, name = str(item.get("path") or ""), str(item.get("name") or "")
    return path[: -len(name) - 1] if name and path.endswith("/" + name) else path


def _encode(path: str) -> str:
    return urllib.parse.quote(path, safe="")


# --------------------------------------------------------------------------- strategies


def _project_refs(items: Iterable[dict[str, Any]]) -> list[ProjectRef]:
    refs = []
    for item in items:
        kind = (item.get("namespace") or {}).get("kind")
        refs.append(ProjectRef(int(item["id"]), str(item["path_with_namespace"]), personal=kind == "user"))
    return refs


def _rest_project_rows(scan: Scanner, ref: ProjectRef) -> list[dict[str, Any]]:
    """One project's repositories through REST (all pages); 403 means its registry is disabled."""
    try:
        items = scan.rest_pages(f"/projects/{ref.id}/registry/repositories", {})
    except Forbidden:
        scan.warn(f"{ref.path}: container registry disabled; the API cannot see its repositories "
                  "(use --source rails)")
        return []
    return [rest_row(item, ref.path, scan.rest_status) for item in items]


def _graphql_project_rows(scan: Scanner, ref: ProjectRef, after: str | None = None) -> list[dict[str, Any]]:
    """One project's repositories through GraphQL from cursor `after` (falls back to REST)."""
    rows: list[dict[str, Any]] = []
    try:
        while True:
            scan.tracker.plan(1)
            data = scan.graphql(PROJECT_REPOS_QUERY, {"path": ref.path, "after": after})
            project = data.get("project")
            if project is None:
                return rows
            conn = _connection(scan, project, "containerRepositories")
            rows.extend(graphql_row(n, ref.id, str(project["fullPath"])) for n in conn["nodes"])
            if not conn["pageInfo"]["hasNextPage"]:
                return rows
            after = conn["pageInfo"]["endCursor"]
    except GraphQLUnavailable:
        scan.tracker.plan(1)
        return _rest_project_rows(scan, ref)


def _connection(scan: Scanner, obj: dict[str, Any], name: str) -> dict[str, Any]:
    """A connection field from an answer; a missing or malformed one disables GraphQL for the scan."""
    conn = obj.get(name)
    if not isinstance(conn, dict) or "nodes" not in conn or "pageInfo" not in conn:
        raise scan.graphql_failed(f"{name} missing from the answer")
    return conn


def _graphql_batch(scan: Scanner, refs: list[ProjectRef]) -> tuple[list[dict[str, Any]], list[tuple[ProjectRef,
                                                                                                     str]]]:
    """Up to 100 projects in one query; returns rows and the projects with more repositories to page."""
    data = scan.graphql(PROJECTS_QUERY, {"ids": [f"gid://gitlab/Project/{r.id}" for r in refs],
                                         "first": len(refs), "repos": GRAPHQL_REPOS_PER_PROJECT})
    nodes = (data.get("projects") or {}).get("nodes")
    if not isinstance(nodes, list):
        raise scan.graphql_failed("projects missing from the answer")
    by_id = {r.id: r for r in refs}
    rows: list[dict[str, Any]] = []
    more: list[tuple[ProjectRef, str]] = []
    for node in nodes:
        ref = by_id.get(_gid(node["id"]))
        if ref is None:
            continue
        conn = _connection(scan, node, "containerRepositories")
        rows.extend(graphql_row(n, ref.id, str(node["fullPath"])) for n in conn["nodes"])
        if conn["pageInfo"]["hasNextPage"]:
            more.append((ref, str(conn["pageInfo"]["endCursor"])))
    return rows, more


def _scan_projects_by_graphql(scan: Scanner, refs: list[ProjectRef], phase: str) -> None:
    """Batches of 100 projects through GraphQL; failed batches and long tails go through REST or paging."""
    batches = [refs[i:i + GRAPHQL_PROJECT_BATCH] for i in range(0, len(refs), GRAPHQL_PROJECT_BATCH)]

    def one(batch: list[ProjectRef]) -> tuple[list[dict[str, Any]], list[tuple[ProjectRef, str]], list[ProjectRef]]:
        try:
            rows, more = _graphql_batch(scan, batch)
            return rows, more, []
        except GraphQLUnavailable:
            return [], [], batch

    scan.tracker.plan(len(batches), phase)
    follow_ups: list[Callable[[], list[dict[str, Any]]]] = []
    for rows, more, failed in scan.run_all([partial(one, b) for b in batches], phase):
        scan.add_rows(rows)
        follow_ups += [partial(_graphql_project_rows, scan, r, c) for r, c in more]
        scan.tracker.plan(len(failed))
        follow_ups += [partial(_rest_project_rows, scan, r) for r in failed]
    for rows in scan.run_all(follow_ups, phase):
        scan.add_rows(rows)


def _scan_groups_by_rest(scan: Scanner, groups: list[dict[str, Any]], paths: dict[int, str]) -> None:
    listings = [Listing(f"/groups/{g['id']}/registry/repositories") for g in groups]
    for items in scan.rest_listings(listings, "group repositories"):
        scan.add_rows(rest_row(item, paths.get(int(item["project_id"])), scan.rest_status) for item in items)


def _graphql_group_rows(scan: Scanner, group: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A group's repositories (subgroups included) with `status` via GraphQL; None when GraphQL fails."""
    rows: list[dict[str, Any]] = []
    after: str | None = None
    try:
        while True:
            scan.tracker.plan(1)
            data = scan.graphql(GROUP_REPOS_QUERY, {"path": group["full_path"], "after": after})
            if data.get("group") is None:
                return rows
            conn = _connection(scan, data["group"], "containerRepositories")
            for node in conn["nodes"]:
                project = node.get("project") or {}
                rows.append(graphql_row(node, _gid(project.get("id", "0")), str(project.get("fullPath"))))
            if not conn["pageInfo"]["hasNextPage"]:
                return rows
            after = conn["pageInfo"]["endCursor"]
    except GraphQLUnavailable:
        return None


def _scan_groups(scan: Scanner, groups: list[dict[str, Any]], paths: dict[int, str]) -> None:
    """REST when it has `status` (parallel pages); otherwise GraphQL per group, REST for what fails."""
    if scan.rest_status or not scan.graphql_ok:
        _scan_groups_by_rest(scan, groups, paths)
        return
    answers = scan.run_all([partial(_graphql_group_rows, scan, g) for g in groups], "group repositories")
    failed = []
    for group, rows in zip(groups, answers, strict=True):
        if rows is None:
            failed.append(group)
        else:
            scan.add_rows(rows)
    if failed:
        _scan_groups_by_rest(scan, failed, paths)


def _scan_instance(scan: Scanner) -> None:
    """Top-level groups through the group endpoint, personal projects through GraphQL batches."""
    projects, groups = scan.rest_listings(
        [Listing("/projects", {"simple": "true", "order_by": "id", "sort": "asc"}, keyset=True),
         Listing("/groups", {"top_level_only": "true", "all_available": "true", "order_by": "id", "sort": "asc"})],
        "listing projects and groups")
    refs = _project_refs(projects)
    paths = {r.id: r.path for r in refs}
    _scan_groups(scan, groups, paths)
    personal = [r for r in refs if r.personal]
    _scan_projects(scan, personal, "personal projects")


def _scan_projects(scan: Scanner, refs: list[ProjectRef], phase: str) -> None:
    if not refs:
        return
    if scan.graphql_ok:
        _scan_projects_by_graphql(scan, refs, phase)
        return
    scan.tracker.plan(len(refs), phase)
    for rows in scan.run_all([partial(_rest_project_rows, scan, r) for r in refs], phase):
        scan.add_rows(rows)


def _resolve_projects(scan: Scanner, paths: list[str]) -> list[ProjectRef]:
    scan.tracker.plan(len(paths), "resolving projects")
    found = scan.run_all([partial(scan.get_json, f"/projects/{_encode(p)}") for p in paths],
                         "resolving projects")
    return _project_refs(found)


def _scan_group(scan: Scanner, path: str) -> None:
    """One group and its subgroups: the group endpoint, with the group's projects for full paths."""
    scan.tracker.plan(1, "resolving group")
    group = scan.get(f"/groups/{_encode(path)}", {"with_projects": "false"}).json()
    (projects,) = scan.rest_listings(
        [Listing(f"/groups/{group['id']}/projects", {"include_subgroups": "true", "simple": "true",
                                                     "order_by": "id", "sort": "asc"})], "listing group projects")
    _scan_groups(scan, [group], {r.id: r.path for r in _project_refs(projects)})


def _scan_named_projects(scan: Scanner, paths: list[str]) -> None:
    refs = _resolve_projects(scan, list(dict.fromkeys(paths)))
    if scan.rest_status:
        scan.tracker.plan(len(refs), "project repositories")
        for rows in scan.run_all([partial(_rest_project_rows, scan, r) for r in refs], "project repositories"):
            scan.add_rows(rows)
        return
    _scan_projects(scan, refs, "project repositories")


def scan_repositories(gl: gitlab.Gitlab, *, projects: list[str] | None = None, group: str | None = None,
                      concurrency: int = 8, progress: Progress | None = None) -> ApiScan:
    """Repositories in a deletion state, instance-wide or narrowed to `projects` or a `group`.

    `projects` are full paths (validated by the caller) and take precedence over `group`; `group` is
    a full path and includes its subgroups. Progress goes to `progress` (the CLI draws it). Raises
    NotFoundError for an unknown project or group, AuthError, ConnectError or ApiError when GitLab
    cannot be read.
    """
    with Scanner(gl, concurrency, progress) as scan:
        scan.tracker.plan(1, "GitLab version")
        scan.result.version = str(scan.get("/version").json()["version"])
        scan.rest_status = gitlab_facts.rest_has_status(scan.result.version)
        if projects:
            _scan_named_projects(scan, projects)
        elif group:
            _scan_group(scan, group)
        else:
            _scan_instance(scan)
    result = scan.result
    result.repositories = scan.rows()
    _add_warnings(gl, result, instance_wide=not projects and not group)
    return result


def _add_warnings(gl: gitlab.Gitlab, result: ApiScan, *, instance_wide: bool) -> None:
    unknown = sum(1 for r in result.repositories if r["status"] == UNKNOWN)
    if unknown:
        result.warnings.append(
            f"GitLab {result.version} has no `status` in the REST API (added in 16.7) and GraphQL did not "
            f"answer: {unknown} repositories are listed as unknown; use --source rails for their state")
    if instance_wide and hasattr(gl, "user") and not is_admin(gl):
        result.warnings.append("the token is not an administrator's: only projects it can see were scanned")


__all__ = ["ApiScan", "api_errors", "connect", "is_admin", "scan_repositories", "server_version"]
