"""The lab's fake GitLab API, driven by real python-gitlab over loopback: GitLab's pagination,
entity fields per version, errors, rate limiting and the GraphQL subset."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gitlab
import pytest
import requests

from glcleanup.lab import schema
from glcleanup.lab.api import GitLabApiServer
from tests.support.api_lab import TOKEN, build


@dataclass
class Lab:
    db: Path
    server: GitLabApiServer
    projects: dict[str, int] = field(default_factory=dict)
    repos: dict[str, int] = field(default_factory=dict)

    @property
    def gl(self) -> gitlab.Gitlab:
        return gitlab.Gitlab(self.server.url, private_token=TOKEN)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    db = tmp_path / "gitlab.db"
    projects, repos = build(db)
    with GitLabApiServer(db, TOKEN) as server:
        yield Lab(db, server, projects, repos)


def test_pagination_headers_and_links_follow_gitlab(lab: Lab) -> None:
    gl = lab.gl
    assert len(gl.projects.list(get_all=True)) == len(lab.projects)
    pages = [p for m, p in lab.server.requests if p.startswith("/api/v4/projects")]
    assert len(pages) == 3  # 50 projects, 20 a page, python-gitlab followed Link twice
    resp = requests.get(f"{lab.server.url}/api/v4/projects", params={"page": 2, "simple": "true"},
                        headers={"PRIVATE-TOKEN": TOKEN}, timeout=10)
    assert resp.headers["X-Page"] == "2"
    assert resp.headers["X-Per-Page"] == "20"
    assert resp.headers["X-Next-Page"] == "3"
    assert resp.headers["X-Prev-Page"] == "1"
    assert resp.headers["X-Total"] == str(len(lab.projects))
    assert resp.headers["X-Total-Pages"] == "3"
    assert set(resp.links) == {"prev", "next", "first", "last"}
    assert resp.links["next"]["url"].startswith(f"{lab.server.url}/api/v4/projects?")
    assert "simple=true" in resp.links["next"]["url"]
    last = requests.get(resp.links["last"]["url"], headers={"PRIVATE-TOKEN": TOKEN}, timeout=10)
    assert "next" not in last.links
    assert last.headers["X-Next-Page"] == ""
    capped = requests.get(f"{lab.server.url}/api/v4/projects", params={"per_page": 500},
                          headers={"PRIVATE-TOKEN": TOKEN}, timeout=10)
    assert capped.headers["X-Per-Page"] == "100"


def test_links_are_built_from_the_host_header(lab: Lab) -> None:
    resp = requests.get(f"{lab.server.url}/api/v4/projects", timeout=10,
                        headers={"PRIVATE-TOKEN": TOKEN, "Host": "gitlab.example.com"})
    assert resp.links["next"]["url"].startswith("http://gitlab.example.com/api/v4/projects?")


def test_projects_carry_namespace_kind(lab: Lab) -> None:
    projects = {p.path_with_namespace: p for p in lab.gl.projects.list(get_all=True, simple=True)}
    assert projects["alice/sandbox"].namespace["kind"] == "user"
    assert projects["acme/platform/svc1"].namespace == {
        **projects["acme/platform/svc1"].namespace, "kind": "group", "full_path": "acme/platform"}
    ids = [p.id for p in lab.gl.projects.list(get_all=True, order_by="id", sort="asc")]
    assert ids == sorted(ids)


def test_repository_entity_has_status_from_16_7_and_never_tags_unasked(lab: Lab) -> None:
    repo = lab.gl.projects.get("acme/website").repositories.list(get_all=True)[0]
    assert repo.status == "delete_scheduled"
    assert set(repo.attributes) >= {"id", "name", "path", "project_id", "location", "created_at",
                                    "cleanup_policy_started_at", "status"}
    assert "tags" not in repo.attributes
    assert "tags_count" not in repo.attributes
    assert lab.server.registry_calls == 0
    counted = lab.gl.projects.get("acme/website").repositories.list(get_all=True, tags_count=True)[0]
    assert counted.tags_count == 0
    assert lab.server.registry_calls == 1


def test_16_6_has_no_status_field(tmp_path: Path) -> None:
    db = tmp_path / "gitlab.db"
    build(db, "16.6.1", group_projects=2)
    with GitLabApiServer(db, TOKEN) as server:
        gl = gitlab.Gitlab(server.url, private_token=TOKEN)
        assert gl.version()[0] == "16.6.1"
        repo = gl.projects.get("acme/website").repositories.list(get_all=True)[0]
        assert "status" not in repo.attributes


def test_401_without_or_with_a_wrong_token(lab: Lab) -> None:
    resp = requests.get(f"{lab.server.url}/api/v4/version", timeout=10)
    assert resp.status_code == 401
    assert resp.json() == {"message": "401 Unauthorized"}
    with pytest.raises(gitlab.exceptions.GitlabAuthenticationError):
        gitlab.Gitlab(lab.server.url, private_token="wrong").auth()


def test_project_by_encoded_path_and_404(lab: Lab) -> None:
    assert lab.gl.projects.get("ACME/Website").id == lab.projects["acme/website"]
    with pytest.raises(gitlab.exceptions.GitlabGetError) as err:
        lab.gl.projects.get("acme/nope")
    assert err.value.response_code == 404
    assert "404 Project Not Found" in str(err.value)
    user = lab.gl.http_get("/user")
    assert isinstance(user, dict)
    assert user["is_admin"] is True


def test_group_endpoint_includes_subgroups_but_not_disabled_registries(lab: Lab) -> None:
    group = lab.gl.groups.get("acme")
    paths = {r.path for r in group.registry_repositories.list(get_all=True)}
    assert "acme/platform/svc7" in paths
    assert "acme/website/worker" in paths
    assert "acme/legacy/old" not in paths  # with_feature_enabled(:container_registry)
    assert [g.full_path for g in lab.gl.groups.list(top_level_only=True, get_all=True)] == ["acme", "zeta"]
    with pytest.raises(gitlab.exceptions.GitlabListError) as err:
        lab.gl.projects.get("acme/legacy/old").repositories.list(get_all=True)
    assert err.value.response_code == 403


def test_delete_schedules_and_put_disables_the_policy(lab: Lab) -> None:
    pid, rid = lab.projects["acme/platform/svc2"], lab.repos["acme/platform/svc2"]
    resp = requests.delete(f"{lab.server.url}/api/v4/projects/{pid}/registry/repositories/{rid}",
                           headers={"PRIVATE-TOKEN": TOKEN}, timeout=10)
    assert resp.status_code == 202
    repo = lab.gl.http_get(f"/registry/repositories/{rid}")
    assert isinstance(repo, dict)
    assert repo["status"] == "delete_scheduled"
    conn = schema.connect(lab.db)
    assert conn.execute("SELECT status_updated_at FROM container_repositories WHERE id = ?", (rid,)).fetchone()[0]
    project = lab.gl.projects.get(pid)
    project.container_expiration_policy_attributes = {"enabled": False}
    project.save()
    assert lab.gl.projects.get(pid).container_expiration_policy["enabled"] is False
    form = requests.put(f"{lab.server.url}/api/v4/projects/{pid}", timeout=10, headers={"PRIVATE-TOKEN": TOKEN},
                        data={"container_expiration_policy_attributes[enabled]": "true"})
    assert form.json()["container_expiration_policy"]["enabled"] is True
    conn.close()


def test_429_retry_after_is_honoured_by_python_gitlab(tmp_path: Path) -> None:
    db = tmp_path / "gitlab.db"
    build(db, group_projects=2)
    with GitLabApiServer(db, TOKEN, rate_limit_every=2) as server:
        gl = gitlab.Gitlab(server.url, private_token=TOKEN)
        started = time.monotonic()
        assert gl.http_get("/version")["version"] == "17.3.5"  # type: ignore[index]
        assert gl.http_get("/version")["version"] == "17.3.5"  # type: ignore[index]
        assert time.monotonic() - started >= 1.0
        raw = requests.get(f"{server.url}/api/v4/version", headers={"PRIVATE-TOKEN": TOKEN}, timeout=10)
        assert server.request_count == 4
        assert raw.status_code == 429
        assert raw.headers["Retry-After"] == "1"


def test_latency_is_paid_per_request(tmp_path: Path) -> None:
    db = tmp_path / "gitlab.db"
    build(db, group_projects=1)
    with GitLabApiServer(db, TOKEN, latency=0.05) as server:
        started = time.monotonic()
        gitlab.Gitlab(server.url, private_token=TOKEN).http_get("/version")
        assert time.monotonic() - started >= 0.05


def graphql(lab: Lab, query: str, variables: dict[str, object] | None = None) -> dict[str, object]:
    answer = lab.gl.http_post(f"{lab.server.url}/api/graphql", post_data={"query": query, "variables": variables})
    assert isinstance(answer, dict)
    return answer


def test_graphql_projects_by_ids_with_repositories_and_status(lab: Lab) -> None:
    answer = graphql(lab, "query($ids: [ID!]) { projects(ids: $ids) { nodes { id fullPath "
                          "containerRepositoriesCount containerRepositories(first: 5) { pageInfo { hasNextPage } "
                          "nodes { name status } } } } }",
                     {"ids": [f"gid://gitlab/Project/{lab.projects['alice/sandbox']}"]})
    (node,) = answer["data"]["projects"]["nodes"]  # type: ignore[index]
    assert node["fullPath"] == "alice/sandbox"
    assert node["containerRepositoriesCount"] == 25
    assert node["containerRepositories"]["pageInfo"]["hasNextPage"] is True
    assert node["containerRepositories"]["nodes"][3] == {"name": "img3", "status": "DELETE_FAILED"}


def test_graphql_group_cursor_pagination_covers_subgroups(lab: Lab) -> None:
    seen, after = [], None
    while True:
        answer = graphql(lab, "query($after: String) { group(fullPath: \"acme\") { containerRepositories("
                              "first: 20, after: $after) { pageInfo { hasNextPage endCursor } nodes { path } } } }",
                         {"after": after})
        conn = answer["data"]["group"]["containerRepositories"]  # type: ignore[index]
        seen += [n["path"] for n in conn["nodes"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert len(seen) == 46
    assert len(set(seen)) == 46


def test_graphql_errors_look_like_graphql_ruby(lab: Lab) -> None:
    answer = graphql(lab, "{ project(fullPath: \"alice/sandbox\") { tagz } }")
    assert answer == {"errors": [{"message": "Field 'tagz' doesn't exist on type 'Project'",
                                  "extensions": {"code": "undefinedField", "typeName": "Project",
                                                 "fieldName": "tagz"}}]}
    nested = " ".join(f"a{i}: group(fullPath: \"acme\") {{ containerRepositories {{ nodes {{ id name path status "
                      f"location createdAt }} }} }}" for i in range(20))
    answer = graphql(lab, "{ " + nested + " }")
    assert "exceeds max complexity of 300" in answer["errors"][0]["message"]  # type: ignore[index]
    assert "Parse error" in graphql(lab, "{ project(")["errors"][0]["message"]  # type: ignore[index]


@pytest.mark.parametrize("failure", ["error", "missing-field"])
def test_graphql_failure_modes_for_fallback_tests(tmp_path: Path, failure: str) -> None:
    db = tmp_path / "gitlab.db"
    build(db, group_projects=1)
    with GitLabApiServer(db, TOKEN, graphql_failure=failure) as server:
        gl = gitlab.Gitlab(server.url, private_token=TOKEN)
        answer = gl.http_post(f"{server.url}/api/graphql",
                              post_data={"query": "{ group(fullPath: \"acme\") { containerRepositories { "
                                                  "nodes { id } } } }"})
        assert isinstance(answer, dict)
        assert answer["errors"]
        assert "data" not in answer


def test_large_instances_drop_totals_cap_offsets_and_offer_keyset(lab: Lab) -> None:
    lab.server.count_limit, lab.server.max_offset = 30, 40
    head = {"PRIVATE-TOKEN": TOKEN}
    first = requests.get(f"{lab.server.url}/api/v4/projects", params={"per_page": 20}, headers=head, timeout=10)
    assert "X-Total" not in first.headers
    assert "last" not in first.links
    assert first.headers["X-Next-Page"] == "2"
    beyond = requests.get(f"{lab.server.url}/api/v4/projects", params={"per_page": 20, "page": 3}, headers=head,
                          timeout=10)
    assert beyond.status_code == 405
    assert "keyset pagination" in beyond.json()["message"]
    ids = [p.id for p in lab.gl.projects.list(pagination="keyset", order_by="id", sort="asc", per_page=20,
                                              get_all=True)]
    assert ids == sorted(lab.projects.values())
