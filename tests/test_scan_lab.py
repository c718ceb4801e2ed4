"""scan end to end against the lab: REST (python-gitlab) and the Ruby runner merged by id, plus the
registry log, while the simulated 17.3 worker really loops against the real registry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.lab.lab import Lab


@pytest.fixture(scope="module")
def looping_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("lab"), version="17.3.5")
    with lab:
        target = next(r for r in lab.repositories() if r["path"] == "acme/platform/api")
        lab.delete_image("acme/platform/api", int(target["id"]))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and lab.registry_log.read_bytes().count(b'"DELETE /v2/acme') < 6:
            time.sleep(0.1)
        yield lab


def _invoke(lab: Lab, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={**lab.settings_env(), **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def test_scan_all_merges_api_and_rails_and_shows_the_loop(looping_lab: Lab) -> None:
    code, out, err = _invoke(looping_lab, "scan", "--registry-log", str(looping_lab.registry_log), "-o", "json")
    assert code == 1, err
    doc = json.loads(out)
    expected = {r["id"] for r in looping_lab.repositories() if r["status"] is not None}
    assert {r["id"] for r in doc["repositories"]} == expected
    row = doc["repositories"][0]
    assert row["path"] == "acme/platform/api"
    assert row["project"] == "acme/platform/api"
    assert row["status"] in ("delete_scheduled", "delete_ongoing")
    assert row["sources"] == ["api", "rails"]
    assert row["status_updated_at"]
    assert doc["gitlab"] == {"url": looping_lab.gitlab_url, "version": "17.3.5", "retry_cap": "none"}
    [loop] = doc["loops"]
    assert loop["path"] == "acme/platform/api"
    assert loop["user_agent"] == "GitLab/17.3.5"
    assert set(loop["codes"]) == {"400"}
    assert loop["requests"] >= 6
    assert loop["per_minute"] > 60
    assert {"first_seen", "last_seen"} <= set(loop)


def test_scan_api_alone_and_narrowed_to_a_group(looping_lab: Lab) -> None:
    code, out, _ = _invoke(looping_lab, "scan", "--source", "api", "--project", "acme/website", "-o", "json")
    assert code == 0
    assert json.loads(out)["repositories"] == []
    code, _, err = _invoke(looping_lab, "scan", "--source", "api", "--group", "acme/website")
    assert code == 3  # a project, not a group
    assert "not found" in err.lower()
    code, out, _ = _invoke(looping_lab, "scan", "--source", "api", "--group", "acme", "-o", "json")
    assert code == 1
    assert [r["sources"] for r in json.loads(out)["repositories"]] == [["api"]]


def test_scan_table_is_readable(looping_lab: Lab) -> None:
    code, out, _ = _invoke(looping_lab, "scan", "--source", "rails", "-o", "table")
    assert code == 1
    assert "acme/platform/api" in out
    assert "delete_" in out


def test_missing_token_and_refused_token_are_one_line_exit_3(looping_lab: Lab) -> None:
    env = looping_lab.settings_env()
    env.pop("GITLAB_PRIVATE_TOKEN")
    result = CliRunner().invoke(app, ["scan", "--source", "api"], env=env)
    assert result.exit_code == 3
    assert "no GitLab token" in result.stderr
    code, _, err = _invoke(looping_lab, "scan", "--source", "api", env={"GITLAB_PRIVATE_TOKEN": "glpat-wrong-1234"})
    assert code == 3
    assert len(err.strip().splitlines()) == 1
    assert "glpat-wrong-1234" not in err
    assert looping_lab.token not in err


def test_scan_on_16_6_reports_every_state_through_the_runner(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab166", version="16.6.1") as lab:
        target = next(r for r in lab.repositories() if r["path"] == "alice/sandbox")
        lab.delete_image("alice/sandbox", int(target["id"]))
        code, out, err = _invoke(lab, "scan", "-o", "json")
        assert code == 1, err
        doc = json.loads(out)
        assert doc["gitlab"]["version"] == "16.6.1"
        [row] = doc["repositories"]
        assert row["path"] == "alice/sandbox"
        assert row["status"] in ("delete_scheduled", "delete_ongoing")
        assert "failed_deletion_count" not in row  # the column does not exist before 17.5


def test_filters_combine_as_a_union_on_both_sources(looping_lab: Lab) -> None:
    """`--group acme --project alice/sandbox`: rows of the group OR the project (README), on api and rails."""
    code, out, err = _invoke(looping_lab, "scan", "--group", "acme", "--project", "alice/sandbox", "-o", "json")
    assert code == 1, err
    rows = json.loads(out)["repositories"]
    assert [(r["path"], r["sources"]) for r in rows] == [("acme/platform/api", ["api", "rails"])]


def test_an_unknown_group_is_exit_3_on_every_source(looping_lab: Lab) -> None:
    for source in ("api", "rails", "all"):
        code, out, err = _invoke(looping_lab, "scan", "--source", source, "--group", "nope", "-o", "json")
        assert code == 3, (source, out, err)
        assert "not found" in err.lower()
        assert out == ""
