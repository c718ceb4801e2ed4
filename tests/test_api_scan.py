"""`glcleanup.gitlab.api`: connect and scan with real python-gitlab against the lab's API on loopback."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import gitlab
import pytest

from glcleanup.cli.progress import rich_progress
from glcleanup.errors import AuthError, ConfigError, ConnectError, NotFoundError
from glcleanup.gitlab import api as gitlab_api
from glcleanup.lab import schema, seed
from glcleanup.lab.api import GitLabApiServer
from glcleanup.settings import Settings
from tests.support.api_lab import TOKEN, build
from tests.support.net import free_port

STUCK_17 = {("acme/website", "acme/website/worker", "delete_scheduled"),
            ("alice/sandbox", "alice/sandbox/img3", "delete_failed"),
            ("alice/sandbox", "alice/sandbox/img24", "delete_ongoing"),
            ("zeta/tools", "zeta/tools", "delete_ongoing")}


def quiet(*_args: object) -> None:
    return


def found(scan: gitlab_api.ApiScan) -> set[tuple[str, str, str]]:
    return {(r["project"], r["path"], r["status"]) for r in scan.repositories}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "gitlab.db"
    build(path)
    return path


@pytest.fixture
def server(db: Path) -> Iterator[GitLabApiServer]:
    with GitLabApiServer(db, TOKEN) as srv:
        yield srv


def connect(server: GitLabApiServer) -> gitlab.Gitlab:
    return gitlab_api.connect(Settings(url=server.url, token=TOKEN))


def test_instance_scan_lists_only_stuck_rows_with_their_fields(server: GitLabApiServer) -> None:
    gl = connect(server)
    assert gitlab_api.server_version(gl) == "17.3.5"
    scan = gitlab_api.scan_repositories(gl, progress=quiet)
    assert found(scan) == STUCK_17  # the registry-disabled project is invisible to the API
    assert scan.warnings == []
    row = next(r for r in scan.repositories if r["path"] == "acme/website/worker")
    assert set(row) >= {"id", "project", "path", "name", "status", "project_id", "location", "created_at",
                        "sources"}
    assert row["sources"] == ["api"]
    assert row["name"] == "worker"
    assert row["location"].endswith("/acme/website/worker")
    for each in scan.repositories:  # REST and GraphQL rows carry timestamps in the same shape
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", each["created_at"])


def test_scan_never_asks_for_tags_and_counts_its_requests(server: GitLabApiServer) -> None:
    gl = connect(server)
    server.reset_counts()
    scan = gitlab_api.scan_repositories(gl, progress=quiet)
    assert scan.requests == server.request_count
    assert not any("tags" in path for _method, path in server.requests)
    assert server.registry_calls == 0


def test_project_narrowing(server: GitLabApiServer) -> None:
    gl = connect(server)
    scan = gitlab_api.scan_repositories(gl, projects=["alice/sandbox", "zeta/tools"], progress=quiet)
    assert found(scan) == {s for s in STUCK_17 if s[0] in ("alice/sandbox", "zeta/tools")}
    assert not any(path.startswith("/api/v4/groups") for _m, path in server.requests)


def test_group_narrowing_includes_subgroups(db: Path) -> None:
    conn = schema.connect(db)
    pid = seed.create_project(conn, seed.ensure_group(conn, "acme/platform/deep"), "x")
    seed.create_repository(conn, pid, "", status="delete_failed")
    conn.close()
    with GitLabApiServer(db, TOKEN) as server:
        scan = gitlab_api.scan_repositories(connect(server), group="acme", progress=quiet)
        assert found(scan) == {("acme/website", "acme/website/worker", "delete_scheduled"),
                               ("acme/platform/deep/x", "acme/platform/deep/x", "delete_failed")}
        sub = gitlab_api.scan_repositories(connect(server), group="acme/platform", progress=quiet)
        assert found(sub) == {("acme/platform/deep/x", "acme/platform/deep/x", "delete_failed")}


def test_unknown_project_or_group_is_not_found(server: GitLabApiServer) -> None:
    gl = connect(server)
    with pytest.raises(NotFoundError, match="404 Project Not Found"):
        gitlab_api.scan_repositories(gl, projects=["acme/nope"], progress=quiet)
    with pytest.raises(NotFoundError, match="404 Group Not Found"):
        gitlab_api.scan_repositories(gl, group="nope", progress=quiet)


def test_pagination_over_several_pages(tmp_path: Path) -> None:
    """250 repositories in one group (3 REST pages) and a personal project past GraphQL's first 20."""
    db = tmp_path / "gitlab.db"
    build(db, group_projects=250)
    conn = schema.connect(db)
    conn.execute("UPDATE container_repositories SET status = 2, status_updated_at = created_at WHERE id = "
                 "(SELECT MAX(c.id) FROM container_repositories c JOIN routes r ON r.source_id = c.project_id "
                 "AND r.source_type = 'Project' WHERE r.path LIKE 'acme/platform/%')")
    conn.close()
    with GitLabApiServer(db, TOKEN) as server:
        scan = gitlab_api.scan_repositories(connect(server), progress=quiet)
        assert ("acme/platform/svc249", "acme/platform/svc249", "delete_ongoing") in found(scan)
        assert found(scan) >= STUCK_17
        pages = [p for _m, p in server.requests if "/registry/repositories" in p and p.startswith("/api/v4/groups")]
        assert len(pages) == 3 + 1  # acme: 3 pages of 100, zeta: 1


def test_16_6_status_comes_from_graphql(tmp_path: Path) -> None:
    db = tmp_path / "gitlab.db"
    build(db, "16.6.1")
    with GitLabApiServer(db, TOKEN) as server:
        scan = gitlab_api.scan_repositories(connect(server), progress=quiet)
        assert found(scan) == STUCK_17
        assert scan.graphql is True
        assert scan.version == "16.6.1"


def test_16_6_without_graphql_reports_unknown(tmp_path: Path) -> None:
    db = tmp_path / "gitlab.db"
    build(db, "16.6.1", group_projects=3)
    with GitLabApiServer(db, TOKEN, graphql_failure="error") as server:
        scan = gitlab_api.scan_repositories(connect(server), progress=quiet)
    statuses = {r["status"] for r in scan.repositories}
    assert statuses == {"unknown"}
    assert len(scan.repositories) == 3 + 1 + 25 + 1  # every repository the API can see
    assert any("no `status` in the REST API" in w for w in scan.warnings)
    assert any("GraphQL unavailable" in w for w in scan.warnings)


@pytest.mark.parametrize("failure", ["error", "missing-field", "http-500"])
def test_graphql_failure_falls_back_to_rest_with_the_same_result(db: Path, failure: str) -> None:
    with GitLabApiServer(db, TOKEN) as good:
        expected = gitlab_api.scan_repositories(connect(good), progress=quiet)
    with GitLabApiServer(db, TOKEN, graphql_failure=failure) as bad:
        fallback = gitlab_api.scan_repositories(connect(bad), progress=quiet)
        assert any(p.startswith("/api/v4/projects/") and "/registry/repositories" in p for _m, p in bad.requests)
    assert found(fallback) == found(expected) == STUCK_17
    assert {r["id"] for r in fallback.repositories} == {r["id"] for r in expected.repositories}
    assert fallback.graphql is False
    assert any("fell back to REST" in w for w in fallback.warnings)


def test_429_retry_after_is_honoured(db: Path) -> None:
    with GitLabApiServer(db, TOKEN, rate_limit_every=4) as server:
        gl = connect(server)  # request 1
        started = time.monotonic()
        scan = gitlab_api.scan_repositories(gl, concurrency=2, progress=quiet)
        assert time.monotonic() - started >= 1.0  # slept on Retry-After: 1
        assert found(scan) == STUCK_17
        assert scan.requests > 0


def test_requests_are_far_fewer_than_the_naive_loop(tmp_path: Path) -> None:
    db = tmp_path / "gitlab.db"
    build(db, group_projects=60)
    conn = schema.connect(db)
    for u in range(20):
        ns = seed.create_user(conn, f"dev{u}")
        for k in range(2):
            pid = seed.create_project(conn, ns, f"play{k}")
            if k == 0:
                seed.create_repository(conn, pid, "")
    conn.close()
    with GitLabApiServer(db, TOKEN) as server:
        gl = connect(server)
        server.reset_counts()
        naive = set()
        for project in gitlab.Gitlab(server.url, private_token=TOKEN).projects.list(iterator=True):
            try:
                repos = project.repositories.list(get_all=True)
            except gitlab.exceptions.GitlabListError:  # registry disabled: 403
                continue
            naive |= {r.id for r in repos if getattr(r, "status", None)}
        naive_requests = server.request_count
        scan = gitlab_api.scan_repositories(gl, progress=quiet)
    assert {r["id"] for r in scan.repositories} == naive
    assert naive_requests >= 100
    assert scan.requests * 10 <= naive_requests


def test_progress_callback_and_nothing_on_stdout(server: GitLabApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[int, int | None]] = []
    gitlab_api.scan_repositories(connect(server), progress=lambda done, total: calls.append((done, total)))
    assert calls
    assert calls[-1][0] >= 5
    assert all(total is not None and done <= total for done, total in calls)
    assert capsys.readouterr().out == ""


def test_rich_progress_is_off_without_a_terminal() -> None:
    with rich_progress() as bar:
        assert bar is None
    with rich_progress(enabled=True) as bar:
        assert bar is not None
        bar(1, 2)
        bar.phase("listing projects")  # type: ignore[attr-defined]


def test_bad_token_is_an_auth_error_without_the_token(server: GitLabApiServer) -> None:
    with pytest.raises(AuthError, match="401") as err:
        gitlab_api.connect(Settings(url=server.url, token="s3cret-wrong-token"))
    assert "s3cret-wrong-token" not in str(err.value)


def test_missing_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no GitLab token"):
        gitlab_api.connect(Settings(url="http://127.0.0.1:1"))


def test_unreachable_is_a_connect_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError, match="cannot reach GitLab") as err:
        gitlab_api.connect(Settings(url=url, token="unreachable-token"), timeout=2)
    assert "unreachable-token" not in str(err.value)
    assert "Connection refused" in str(err.value)


def test_large_instance_lists_projects_by_keyset(tmp_path: Path) -> None:
    """Above 10,000 rows GitLab sends no totals, and offset pagination of projects stops at 50,000."""
    db = tmp_path / "gitlab.db"
    build(db, group_projects=230)
    with GitLabApiServer(db, TOKEN) as server:
        server.count_limit, server.max_offset = 100, 100  # the same behaviour at a testable size
        scan = gitlab_api.scan_repositories(connect(server), progress=quiet)
        keyset = [path for _m, path in server.requests if "pagination=keyset" in path]
    assert found(scan) == STUCK_17
    assert len(keyset) == 2  # rows 101-200, 201-236


def test_project_with_registry_disabled_is_reported_not_fatal(server: GitLabApiServer) -> None:
    scan = gitlab_api.scan_repositories(connect(server), projects=["acme/legacy/old"], progress=quiet)
    assert scan.repositories == []
    assert any("acme/legacy/old: container registry disabled" in w for w in scan.warnings)


def test_link_urls_are_followed_on_the_configured_base(server: GitLabApiServer) -> None:
    """A GitLab whose external_url differs from how we reach it still pages through our URL."""
    with gitlab_api.Scanner(connect(server), 1, None) as scan:
        moved = scan.same_base("https://gitlab.internal/api/v4/projects?page=2&per_page=100")
    assert moved == f"{server.url}/api/v4/projects?page=2&per_page=100"
