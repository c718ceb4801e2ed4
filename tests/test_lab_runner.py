"""The lab's `gitlab-rails runner`: real Ruby + ActiveRecord with GitLab's model surface, per version."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from glcleanup.lab import schema, seed
from glcleanup.lab.lab import RUNNER, make_registry_key

pytestmark = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing")
TS_RE = re.compile(r"\A\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\Z")


def make_db(tmp_path: Path, version: str) -> tuple[Path, dict[str, int]]:
    db = tmp_path / "gitlab.sqlite3"
    schema.create(db, version, "http://127.0.0.1:5000")
    conn = schema.connect(db)
    try:
        make_registry_key(tmp_path / "registry.key")
        schema.set_setting(conn, "registry_key_path", str(tmp_path / "registry.key"))
        personal = seed.create_project(conn, seed.create_user(conn, "Alice"), "Sandbox")
        api = seed.create_project(conn, seed.ensure_group(conn, "acme/platform"), "api")
        seed.create_policy(conn, api, enabled=True)
        ids = {
            "personal": personal, "api": api,
            "root": seed.create_repository(conn, personal, ""),
            "worker": seed.create_repository(conn, api, "worker", status="delete_scheduled"),
            "cleanup": seed.create_repository(conn, api, "", cleanup_status="cleanup_unfinished"),
        }
    finally:
        conn.close()
    return db, ids


def run(db: Path, args: Sequence[str], stdin: str | None = None, runner: Path = RUNNER,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(db.parent), **(env or {})}
    if runner == RUNNER:
        full_env["GLCLEANUP_LAB_DB"] = str(db)
    return subprocess.run([str(runner), *args], input=stdin, capture_output=True, text=True, env=full_env,
                          timeout=60, check=False)


def result_json(proc: subprocess.CompletedProcess[str]) -> object:
    """The script's one JSON line, after whatever the boot printed."""
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ruby_json(db: Path, code: str, *args: str) -> object:
    return result_json(run(db, ["runner", "-", *args], stdin=code))


@pytest.fixture(params=["17.3.5", "17.6.0"])
def lab_db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, int], str]:
    db, ids = make_db(tmp_path, request.param)
    return db, ids, request.param


def test_boot_noise_argv_and_stdin(tmp_path: Path) -> None:
    db, _ = make_db(tmp_path, "17.3.5")
    odd = ['{"projects": ["a/b"]}', "two words", "it's \"quoted\"; $(rm -rf /)"]
    proc = run(db, ["runner", "-", *odd], stdin="require 'json'\nputs JSON.generate(ARGV)\n")
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("WARNING:")        # boot noise comes first, on stdout
    assert json.loads(lines[-1]) == odd           # ARGV is exactly the remaining args


def test_code_file_and_environment(tmp_path: Path) -> None:
    db, _ = make_db(tmp_path, "17.3.5")
    assert result_json(run(db, ["runner", "puts [Rails.env, ARGV].to_json", "x"])) == ["production", ["x"]]
    assert result_json(run(db, ["runner", "-e", "development", "puts Rails.env.to_json"])) == "development"
    script = tmp_path / "script.rb"
    script.write_text("puts({file: $0, argv: ARGV, production: Rails.env.production?}.to_json)\n")
    assert result_json(run(db, ["runner", str(script), "a"])) == {
        "file": str(script), "argv": ["a"], "production": True}


def test_exception_exits_1_with_ruby_message(tmp_path: Path) -> None:
    db, _ = make_db(tmp_path, "17.3.5")
    proc = run(db, ["runner", "-"], stdin="puts 'before'\nraise 'boom'\n")
    assert proc.returncode == 1
    assert "before" in proc.stdout
    assert "boom (RuntimeError)" in proc.stderr
    assert "stdin:2" in proc.stderr                # a backtrace, like Rails
    proc = run(db, ["runner", "NoSuchModel.first"])
    assert proc.returncode == 1
    assert "uninitialized constant NoSuchModel (NameError)" in proc.stderr
    assert run(db, ["console"]).returncode == 64


def test_boot_delay_and_boot_log(tmp_path: Path) -> None:
    db, _ = make_db(tmp_path, "17.3.5")
    boots = tmp_path / "boots.log"
    env = {"GLCLEANUP_LAB_BOOT_DELAY": "0.4", "GLCLEANUP_LAB_BOOT_LOG": str(boots)}
    started = time.monotonic()
    result_json(run(db, ["runner", "puts 1"], env=env))
    assert time.monotonic() - started >= 0.4
    result_json(run(db, ["runner", "puts 2"], env={"GLCLEANUP_LAB_BOOT_LOG": str(boots)}))
    assert len(boots.read_text().splitlines()) == 2


def test_projects_routes_and_policies(lab_db: tuple[Path, dict[str, int], str]) -> None:
    db, ids, _ = lab_db
    out = ruby_json(db, """
        p = Project.find_by_full_path("alice/SANDBOX")
        api = Project.find_by_full_path("acme/platform/api")
        puts({
          found: p.id, full_path: p.full_path, missing: Project.find_by_full_path("nope/nope").nil?,
          repos: api.container_repositories.map(&:id).sort,
          policy: api.container_expiration_policy.enabled, no_policy: p.container_expiration_policy.nil?,
          policy_class: ContainerExpirationPolicy.where(enabled: true).count
        }.to_json)
    """)
    assert out == {"found": ids["personal"], "full_path": "Alice/Sandbox", "missing": True,
                   "repos": sorted([ids["worker"], ids["cleanup"]]), "policy": True, "no_policy": True,
                   "policy_class": 1}


def test_container_repository_model(lab_db: tuple[Path, dict[str, int], str]) -> None:
    db, ids, _ = lab_db
    out = ruby_json(db, """
        r = ContainerRepository.find(Integer(ARGV[0]))
        c = ContainerRepository.find(Integer(ARGV[1]))
        puts({
          path: r.path.to_s, root_path: ContainerRepository.find(Integer(ARGV[2])).path.to_s,
          location: r.location, name: r.name, project: r.project.full_path,
          status: r.status, raw: r.attributes_before_type_cast["status"], attrs: r.attributes["status"],
          statuses: ContainerRepository.statuses, scheduled: ContainerRepository.delete_scheduled.pluck(:id),
          where: ContainerRepository.where(status: [:delete_scheduled, :delete_ongoing]).count,
          cleanup: c.expiration_policy_cleanup_status,
          cleanup_enum: ContainerRepository.expiration_policy_cleanup_statuses["cleanup_unfinished"],
          columns: ContainerRepository.column_names
        }.to_json)
    """, str(ids["worker"]), str(ids["cleanup"]), str(ids["root"]))
    assert isinstance(out, dict)
    assert out["path"] == "acme/platform/api/worker"
    assert out["root_path"] == "alice/sandbox"     # GitLab downcases the repository path
    assert out["location"] == "127.0.0.1:5000/acme/platform/api/worker"
    assert out["project"] == "acme/platform/api"
    assert (out["status"], out["raw"], out["attrs"]) == ("delete_scheduled", 0, "delete_scheduled")
    assert out["statuses"] == {"delete_scheduled": 0, "delete_failed": 1, "delete_ongoing": 2}
    assert out["scheduled"] == [ids["worker"]]
    assert out["where"] == 1
    assert (out["cleanup"], out["cleanup_enum"]) == ("cleanup_unfinished", 2)
    assert {"status", "status_updated_at", "delete_started_at"} <= set(out["columns"])


def test_update_columns_destroy_insert_all_and_transaction(lab_db: tuple[Path, dict[str, int], str]) -> None:
    db, ids, _ = lab_db
    ruby_json(db, """
        r = ContainerRepository.find(Integer(ARGV[0]))
        r.update_columns(status: :delete_failed, delete_started_at: nil, status_updated_at: Time.zone.now)
        ContainerRepository.find(Integer(ARGV[1])).destroy!
        now = Time.zone.now
        ContainerRepository.insert_all([{project_id: r.project_id, name: "restored", created_at: now,
                                         updated_at: now, status: 0}])
        begin
          ApplicationRecord.transaction do
            ContainerRepository.where(id: r.id).update_all(status: 2)
            raise "rollback please"
          end
        rescue RuntimeError
        end
        puts 1
    """, str(ids["worker"]), str(ids["root"]))
    conn = schema.connect(db)
    rows = {r["name"]: r for r in conn.execute("SELECT * FROM container_repositories").fetchall()}
    conn.close()
    assert rows["worker"]["status"] == 1           # the transaction rolled back, update_columns stayed
    assert TS_RE.match(rows["worker"]["status_updated_at"])
    assert rows["restored"]["status"] == 0
    assert ids["root"] not in {r["id"] for r in rows.values()}


def test_status_helpers_per_version(lab_db: tuple[Path, dict[str, int], str]) -> None:
    db, ids, version = lab_db
    out = ruby_json(db, """
        r = ContainerRepository.find(Integer(ARGV[0]))
        r.set_delete_ongoing_status
        ongoing = r.reload.attributes_before_type_cast.slice("status", "delete_started_at")
        r.set_delete_scheduled_status
        puts({ongoing: ongoing, after: r.reload.attributes_before_type_cast,
              failed_helper: r.respond_to?(:set_delete_failed_status),
              max: (ContainerRepository::MAX_DELETION_FAILURES if defined?(ContainerRepository::MAX_DELETION_FAILURES)),
              version: Gitlab::VERSION, info: Gitlab.version_info.to_s,
              ge_17_5: Gitlab.version_info >= Gitlab::VersionInfo.new(17, 5, 0),
              parts: [Gitlab.version_info.major, Gitlab.version_info.minor, Gitlab.version_info.patch]}.to_json)
    """, str(ids["worker"]))
    assert isinstance(out, dict)
    assert out["ongoing"]["status"] == 2
    assert TS_RE.match(out["ongoing"]["delete_started_at"])
    after = out["after"]
    assert after["status"] == 0
    assert after["delete_started_at"] is None
    assert TS_RE.match(after["status_updated_at"])
    assert out["version"] == version == out["info"]
    if version == "17.3.5":
        assert out["failed_helper"] is False
        assert out["max"] is None
        assert "failed_deletion_count" not in after
        assert out["ge_17_5"] is False
        assert out["parts"] == [17, 3, 5]
    else:
        assert out["failed_helper"] is True
        assert out["max"] == 10
        assert after["failed_deletion_count"] == 1
        gap = schema.parse_ts(after["next_delete_attempt_at"]) - schema.parse_ts(after["status_updated_at"])
        assert gap.total_seconds() == 60           # 2^0 minutes
        assert out["ge_17_5"] is True


def test_set_delete_failed_status_only_on_17_5_plus(lab_db: tuple[Path, dict[str, int], str]) -> None:
    db, ids, version = lab_db
    proc = run(db, ["runner", "-", str(ids["worker"])], stdin="""
        r = ContainerRepository.find(Integer(ARGV[0]))
        r.set_delete_failed_status
        r.failed_deletion_count = 11
        puts({status: r.reload.status, valid_at_11: (r.failed_deletion_count = 11; r.valid?)}.to_json)
    """)
    if version == "17.3.5":
        assert proc.returncode == 1
        assert "undefined method `set_delete_failed_status'" in proc.stderr
    else:
        assert result_json(proc) == {"status": "delete_failed", "valid_at_11": False}


def test_feature_flag_gates_17_5_backoff(tmp_path: Path) -> None:
    db, ids = make_db(tmp_path, "17.5.0")
    code = """
        r = ContainerRepository.find(Integer(ARGV[0]))
        r.set_delete_scheduled_status
        puts({flag: Feature.enabled?(:set_delete_failed_container_repository), count: r.reload.failed_deletion_count,
              other: Feature.enabled?(:something_else)}.to_json)
    """
    assert ruby_json(db, code, str(ids["worker"])) == {"flag": False, "count": 0, "other": False}
    conn = schema.connect(db)
    seed.set_feature(conn, "set_delete_failed_container_repository")
    conn.close()
    assert ruby_json(db, code, str(ids["worker"])) == {"flag": True, "count": 1, "other": False}


def test_rails_logger_stays_off_stdout(tmp_path: Path) -> None:
    db, _ = make_db(tmp_path, "17.3.5")
    proc = run(db, ["runner", "Rails.logger.info('lab log line'); puts :done"])
    assert "lab log line" not in proc.stdout
    assert "lab log line" in (tmp_path / "log" / "production.log").read_text()


def test_nothing_gitlab_lacks(tmp_path: Path) -> None:
    """The surface is GitLab's: no lab-only helpers leak onto the models."""
    db, _ = make_db(tmp_path, "17.3.5")
    out = ruby_json(db, "puts [ContainerRepository.respond_to?(:registry_host_port), "
                        "ContainerRepository.constants(false).grep(/RETRY|LAB/), "
                        "ContainerRegistry.constants.sort, defined?(ReplicaRecord).nil?, "
                        "ContainerRepository.instance_methods(false).grep(/lab/)].to_json")
    # ContainerRegistry: GitLab's lib/container_registry, reduced to what the scripts use (lab README)
    assert out == [False, [], ["BaseClient", "Client", "Registry", "Tag"], True, []]


def test_location_mints_a_token_like_gitlab(tmp_path: Path) -> None:
    """ContainerRepository#location goes through #registry's full-access token: no key, no location."""
    db, ids = make_db(tmp_path, "17.3.5")
    code = "puts ContainerRepository.find(Integer(ARGV[0])).location.to_json"
    assert ruby_json(db, code, str(ids["worker"])) == "127.0.0.1:5000/acme/platform/api/worker"
    (tmp_path / "registry.key").unlink()
    proc = run(db, ["runner", "-", str(ids["worker"])], stdin=code)
    assert proc.returncode == 1
    assert "registry.key (Errno::ENOENT)" in proc.stderr


@pytest.mark.parametrize(("version", "cached"), [("17.3.5", False), ("17.6.0", False), ("18.2.0", True)])
def test_query_cache_on_for_the_script_on_rails_7_1_versions(tmp_path: Path, version: str, cached: bool) -> None:
    """rails runner on Rails >= 7.1 runs the script in the executor: a repeated SELECT is answered from cache."""
    db, ids = make_db(tmp_path, version)
    out = ruby_json(db, """
        id = Integer(ARGV[0])
        before = ContainerRepository.where(id: id).first.status
        ContainerRepository.connection.raw_connection
                           .execute("UPDATE container_repositories SET status = 1 WHERE id = #{id}")
        puts [before, ContainerRepository.where(id: id).first.status].to_json
    """, str(ids["worker"]))
    assert out == ["delete_scheduled", "delete_scheduled" if cached else "delete_failed"]


@pytest.mark.parametrize("mode", [0o700, 0o777, 0o755], ids=oct)
def test_bootsnap_cache_is_used_only_from_a_private_directory(tmp_path: Path, mode: int) -> None:
    """The compile cache is code the next boot runs: a directory others can write (or read) is not used."""
    db, ids = make_db(tmp_path, "17.3.5")
    cache = tmp_path / "bootsnap"
    cache.mkdir()
    cache.chmod(mode)
    proc = run(db, ["runner", "puts ContainerRepository.count"], env={"GLCLEANUP_LAB_BOOTSNAP_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(len([ids["root"], ids["worker"], ids["cleanup"]]))
    written = list(cache.rglob("*"))
    if mode == 0o700 and shutil.which("ruby") and _has_bootsnap():
        assert written, "a private cache directory is used"
    else:
        assert written == []


def _has_bootsnap() -> bool:
    return subprocess.run(["ruby", "-e", "require 'bootsnap'"], capture_output=True, check=False).returncode == 0
