"""What `stub on` makes of pending.rb's answer: which rows --requeue retries, and the watcher's not-before mark.

The answer comes from a runner on another machine: odd values are ignored, never trusted or fatal.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.ops.pending import latest_retry_epoch, waiting_in_backoff


def row(**kw: Any) -> dict[str, Any]:
    return {"id": 1, "project": "acme/api", "status": "delete_scheduled", "failed_deletion_count": 0,
            "next_delete_attempt_at": None, **kw}


def test_only_rows_held_in_backoff_are_requeued_grouped_by_project() -> None:
    pending = {"pending": [
        row(id=1, failed_deletion_count=6, next_delete_attempt_at="2099-01-01T00:00:00Z"),
        row(id=2),                                                   # queued, no backoff: GitLab takes it anyway
        row(id=3, status="delete_ongoing", failed_deletion_count=2),  # a worker has it right now
        row(id=4, project="acme/web", failed_deletion_count=1),
        row(id=5, failed_deletion_count=3),
        row(id=6, project=None, failed_deletion_count=3),             # no project: cannot be requeued by name
    ]}
    assert waiting_in_backoff(pending) == {"acme/api": [1, 5], "acme/web": [4]}
    assert waiting_in_backoff({}) == {}


@pytest.mark.parametrize(("answer", "expected"), [
    ({"latest_retry_at": "2026-12-01T10:00:00Z"}, 1796119201),
    ({"latest_retry_at": "2026-12-01T10:00:00.250+00:00"}, 1796119201),
    ({"latest_retry_at": None}, None),
    ({"latest_retry_at": "tomorrow"}, None),          # unreadable: no reason to hold the stub up for ever
    ({"latest_retry_at": "2026-12-01T10:00:00"}, None),  # no zone: cannot tell which moment it means
    ({"latest_retry_at": 1796119200}, None),
    ({}, None),
    (None, None),
])
def test_latest_retry_epoch(answer: dict[str, Any] | None, expected: int | None) -> None:
    assert latest_retry_epoch(answer) == expected


@pytest.mark.parametrize("env", [
    {"GLCLEANUP_RAILS_HOST": "", "GLCLEANUP_REGISTRY_URL": "https://127.0.0.1:5000"},
    {"GLCLEANUP_RAILS_HOST": "local", "GLCLEANUP_REGISTRY_URL": ""},
])
def test_requeue_without_a_runner_or_a_registry_url_is_a_usage_error(tmp_path: Any, env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["stub", "on", "--registry-host", "local", "--dir", str(tmp_path / "stub"),
                                      "--mode", "proxy", "--upstream", "http://127.0.0.1:5001", "--listen",
                                      "127.0.0.1:5999", "--requeue", "--yes"], env=env)
    assert result.exit_code == 2, result.output
    assert "--requeue needs --rails-host" in result.stderr
    assert not (tmp_path / "stub").exists()


@pytest.mark.parametrize("runner", ["/bin/false", "sh -c 'echo not json; exit 0'", "/nonexistent/gitlab-rails"])
def test_stub_status_reports_the_stub_when_the_runner_fails(tmp_path: Any, runner: str) -> None:
    result = CliRunner().invoke(app, ["stub", "status", "--registry-host", "local", "--dir", str(tmp_path / "stub"),
                                      "-o", "json"],
                                env={"GLCLEANUP_RAILS_HOST": "local", "GLCLEANUP_RAILS_RUNNER": runner})
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["state"] == "off"
    assert "gitlab" not in doc
    assert doc["warnings"][0].startswith("cannot read GitLab's pending retries")


def test_retry_now_moves_the_watchers_mark_only_when_every_project_was_requeued(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from glcleanup.errors import ConnectError
    from glcleanup.ops import pending
    from glcleanup.ops.requeue import RequeueReport
    from glcleanup.settings import Settings
    from glcleanup.transport import LocalHost

    done = RequeueReport({"plan": [{"id": 1}], "applied": True, "verified": True, "project": {"full_path": "a/b"}})

    def fake(settings: Settings, project: str, ids: list[int]) -> RequeueReport:
        if project == "acme/broken":
            raise ConnectError("SSH connection to gitlab failed")
        return done

    monkeypatch.setattr(pending, "requeue_project", fake)
    (tmp_path / "stub").mkdir()
    mark = tmp_path / "stub" / "not_before"
    mark.write_text("1796119201\n")
    host = LocalHost()

    partial = pending.retry_now(Settings(), host, str(tmp_path / "stub"), {"a/b": [1], "acme/broken": [2]}, quiet=True)
    assert not partial.ok
    assert partial.errors == {"acme/broken": "SSH connection to gitlab failed"}
    assert partial.held_until is None
    assert mark.read_text() == "1796119201\n"              # the rows still wait: the old mark stays

    whole = pending.retry_now(Settings(), host, str(tmp_path / "stub"), {"a/b": [1]}, quiet=True)
    assert whole.ok
    assert whole.held_until is not None
    assert int(mark.read_text()) == whole.held_until        # GitLab's cron picks them within 5 minutes
    assert 355 <= whole.held_until - time.time() <= 361
    assert [r["error"] for r in whole.to_json()] == [None]
    assert [r["error"] for r in partial.to_json()] == [None, "SSH connection to gitlab failed"]
