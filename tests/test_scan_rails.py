"""scan --source rails: the bundled scan.rb through a real Ruby/ActiveRecord runner,
locally, through a prefixed runner command (like `docker exec -i ...`), and over real SSH."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.errors import GlcleanupError, NotFoundError, RunnerError
from glcleanup.gitlab import rails
from glcleanup.lab import schema, seed
from glcleanup.lab.lab import RUNNER
from glcleanup.transport import LocalHost, SSHHost, SSHOptions, parse_host
from tests.support.ssh import AsyncSSHServer, OpenSSHServer

LAB_RAILS = RUNNER
def make_db(path: Path, version: str) -> dict[str, int]:
    """USER/REPO (personal) with a stuck, an ongoing and a normal repository; a group project with a
    parked repository and one whose cleanup-policy run is unfinished."""
    schema.create(path, version)
    conn = schema.connect(path)
    user_repo = seed.create_project(conn, seed.create_user(conn, "USER"), "REPO")
    other = seed.create_project(conn, seed.ensure_group(conn, "acme/platform"), "api")
    ids = {
        "stuck": seed.create_repository(conn, user_repo, "", "delete_scheduled"),
        "ongoing": seed.create_repository(conn, user_repo, "app", "delete_ongoing"),
        "fine": seed.create_repository(conn, user_repo, "ok"),
        "failed": seed.create_repository(conn, other, "", "delete_failed"),
        "policy": seed.create_repository(conn, other, "worker", cleanup_status="cleanup_unfinished"),
    }
    conn.execute("UPDATE container_repositories SET delete_started_at = '2026-11-29 01:02:03.123456' "
                 "WHERE id = ?", (ids["ongoing"],))
    conn.close()
    return ids


@pytest.fixture(params=["17.3.5", "17.6.0"])
def lab_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str, dict[str, int]]]:
    db = tmp_path / "gitlab.sqlite3"
    ids = make_db(db, request.param)
    return db, request.param, ids


@pytest.fixture
def runner_env(monkeypatch: pytest.MonkeyPatch, lab_db: tuple[Path, str, dict[str, int]]) -> Path:
    monkeypatch.setenv("GLCLEANUP_LAB_DB", str(lab_db[0]))
    boot_log = lab_db[0].parent / "boots.log"
    monkeypatch.setenv("GLCLEANUP_LAB_BOOT_LOG", str(boot_log))
    return boot_log


def test_scan_rb_reports_exact_state_locally(lab_db: tuple[Path, str, dict[str, int]], runner_env: Path) -> None:
    _db, version, ids = lab_db
    runner = rails.RailsRunner(LocalHost(), f"{LAB_RAILS} runner")
    result = runner.run("scan", {})
    by_id = {r["id"]: r for r in result["repositories"]}
    assert set(by_id) == {ids["stuck"], ids["ongoing"], ids["failed"]}
    assert by_id[ids["stuck"]]["status"] == "delete_scheduled"
    assert by_id[ids["stuck"]]["path"] == "user/repo"  # ContainerRegistry::Path downcases
    assert by_id[ids["stuck"]]["project"] == "USER/REPO"
    assert by_id[ids["ongoing"]]["path"] == "user/repo/app"
    assert by_id[ids["ongoing"]]["delete_started_at"].startswith("2026-11-29T01:02:03.123456")
    assert by_id[ids["failed"]]["project"] == "acme/platform/api"
    assert [r["id"] for r in result["cleanup_policies"]] == [ids["policy"]]
    has_retry = version >= "17.5"
    assert ("failed_deletion_count" in by_id[ids["stuck"]]) is has_retry
    assert result["retry_cap"] == ("native" if version == "17.6.0" else "none")
    assert runner_env.read_text().count("\n") == 1  # exactly one runner boot


def test_scan_rb_narrows_to_projects_and_refuses_unknown(runner_env: Path,
                                                         lab_db: tuple[Path, str, dict[str, int]]) -> None:
    ids = lab_db[2]
    runner = rails.RailsRunner(LocalHost(), f"{LAB_RAILS} runner")
    result = runner.run("scan", {"projects": ["user/repo"]})  # find_by_full_path is case-insensitive
    assert {r["id"] for r in result["repositories"]} == {ids["stuck"], ids["ongoing"]}
    with pytest.raises(NotFoundError, match="project not found: nope/missing"):
        runner.run("scan", {"projects": ["nope/missing"]})


def test_hostile_values_travel_as_data_not_code(runner_env: Path, lab_db: tuple[Path, str, dict[str, int]]) -> None:
    marker = lab_db[0].parent / "pwned"
    hostile = f'x"; File.write("{marker}", "1"); "#{{File.write("{marker}", "2")}}'
    runner = rails.RailsRunner(LocalHost(), f"{LAB_RAILS} runner")
    with pytest.raises(NotFoundError):
        runner.run("scan", {"projects": [hostile]})
    assert not marker.exists()


def test_prefixed_runner_command_like_docker_exec(runner_env: Path, lab_db: tuple[Path, str, dict[str, int]],
                                                  tmp_path: Path) -> None:
    # A stand-in for `docker exec -i gitlab gitlab-rails runner`: a wrapper that takes options
    # and a container name, then execs the real command with stdin attached.
    fake_docker = tmp_path / "docker"
    fake_docker.write_text('#!/bin/sh\n[ "$1" = exec ] && [ "$2" = -i ] || exit 125\nshift 3\nexec "$@"\n')
    fake_docker.chmod(0o755)
    runner = rails.RailsRunner(LocalHost(), f"{fake_docker} exec -i gitlab {LAB_RAILS} runner")
    result = runner.run("scan", {})
    assert len(result["repositories"]) == 3


def test_ruby_exception_is_a_runner_error_with_the_message(runner_env: Path,
                                                          lab_db: tuple[Path, str, dict[str, int]]) -> None:
    conn = sqlite3.connect(lab_db[0])
    conn.execute("DROP TABLE routes")
    conn.commit()
    conn.close()
    runner = rails.RailsRunner(LocalHost(), f"{LAB_RAILS} runner")
    with pytest.raises(RunnerError, match=r"Ruby raised .*routes"):
        runner.run("scan", {"projects": ["USER/REPO"]})


def test_runner_that_crashes_before_the_script(tmp_path: Path) -> None:
    crash = tmp_path / "crash"
    crash.write_text("#!/bin/sh\necho 'FATAL: could not connect to database' >&2\nexit 1\n")
    crash.chmod(0o755)
    with pytest.raises(RunnerError, match="could not connect to database"):
        rails.RailsRunner(LocalHost(), str(crash)).run("scan", {})
    with pytest.raises(GlcleanupError, match="not found") as missing:
        rails.RailsRunner(LocalHost(), str(tmp_path / "missing-runner")).run("scan", {})
    assert missing.value.exit_code == 3


def _cli_env(db: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"GLCLEANUP_LAB_DB": str(db), **(extra or {})}


def test_cli_scan_rails_json_contract_and_exit_code(runner_env: Path,
                                                    lab_db: tuple[Path, str, dict[str, int]]) -> None:
    result = CliRunner().invoke(app, ["scan", "--source", "rails", "--rails-host", "local",
                                      "--rails-runner", f"{LAB_RAILS} runner", "-o", "json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert set(doc) >= {"gitlab", "repositories", "loops", "warnings"}
    assert doc["gitlab"]["version"] == lab_db[1]
    for row in doc["repositories"]:
        assert {"id", "project", "path", "status", "sources", "status_updated_at", "delete_started_at"} <= set(row)
        assert row["sources"] == ["rails"]
        assert row["status"] in ("delete_scheduled", "delete_ongoing", "delete_failed")


@pytest.mark.parametrize("project", ["a/b'; system('id') #", "a/$(id)", "a/b;c", "a/b\nc", "a/../etc",
                                     "usеr/repo", "a/" + "x" * 300, "single", "a//b", "-rf/x", "a/b.git"])
def test_cli_refuses_hostile_project_paths_before_running_anything(project: str, tmp_path: Path) -> None:
    boot_log = tmp_path / "boots.log"
    result = CliRunner().invoke(app, ["scan", "--source", "rails", "--rails-host", "local",
                                      "--rails-runner", f"{LAB_RAILS} runner", "--project", project],
                                env={"GLCLEANUP_LAB_BOOT_LOG": str(boot_log)})
    assert result.exit_code == 2, result.output
    assert "glcleanup: error:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not boot_log.exists()


def test_scan_over_ssh_into_the_lab_runner(runner_env: Path, lab_db: tuple[Path, str, dict[str, int]],
                                           tmp_path: Path) -> None:
    server = AsyncSSHServer(tmp_path, env={"GLCLEANUP_LAB_DB": str(lab_db[0]),
                                           "GLCLEANUP_LAB_BOOT_LOG": str(runner_env)}).start()
    try:
        result = CliRunner().invoke(app, [
            "scan", "--source", "rails", "--rails-host", f"root@127.0.0.1:{server.port}",
            "--ssh-key", str(server.key_file), "--known-hosts", str(server.known_hosts),
            "--rails-runner", f"{LAB_RAILS} runner", "-o", "json"])
        assert result.exit_code == 1, result.output
        assert len(json.loads(result.stdout)["repositories"]) == 3
        assert len(server.commands) == 1
        assert server.commands[0].startswith(f"{LAB_RAILS} runner - ")
        # unknown host key: refused, one line, exit 3, nothing ran
        (tmp_path / "empty").write_text("")
        refused = CliRunner().invoke(app, [
            "scan", "--source", "rails", "--rails-host", f"root@127.0.0.1:{server.port}",
            "--ssh-key", str(server.key_file), "--known-hosts", str(tmp_path / "empty"),
            "--rails-runner", f"{LAB_RAILS} runner"])
        assert refused.exit_code == 3
        assert "unknown SSH host key" in refused.stderr
        assert len(server.commands) == 1
    finally:
        server.stop()


@pytest.mark.skipif(not OpenSSHServer.available(), reason="needs root and /usr/sbin/sshd")
def test_scan_through_real_openssh(lab_db: tuple[Path, str, dict[str, int]], tmp_path: Path) -> None:
    server = OpenSSHServer(tmp_path, set_env={"GLCLEANUP_LAB_DB": str(lab_db[0])}).start()
    host = SSHHost(parse_host(f"root@127.0.0.1:{server.port}"),
                   SSHOptions(key_file=str(server.key_file), known_hosts=str(server.known_hosts)))
    try:
        result = rails.RailsRunner(host, f"{LAB_RAILS} runner").run("scan", {"projects": ["USER/REPO"]})
        assert {r["status"] for r in result["repositories"]} == {"delete_scheduled", "delete_ongoing"}
    finally:
        host.close()
        server.stop()


def test_parse_output_ignores_boot_noise() -> None:
    out = b"WARNING: something at boot\nGLCLEANUP-RESULT: not this\nmore noise\n" \
          b'GLCLEANUP-RESULT:{"ok":true,"result":{"a":1}}\n'
    assert rails.parse_output(out, b"", 0) == {"a": 1}
