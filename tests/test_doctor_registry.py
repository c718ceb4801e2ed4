"""`glcleanup doctor` against the REAL Distribution 2.8 registry, plus small fakes for the other answers."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.lab.registry import RegistryProcess
from tests.support.net import free_port

needs_registry = pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing")
Handler = Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


def _doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["doctor", *args, "-o", "json"], env=env)
    return result.exit_code, json.loads(result.stdout)


def _check(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in document["checks"] if c["name"] == name)


@needs_registry
def test_distribution_with_delete_enabled_is_a_loop_risk(tmp_path: Path) -> None:
    with RegistryProcess(tmp_path / "reg") as reg:
        code, doc = _doctor("--registry-url", reg.url)
        log = reg.log_path.read_text()
    assert code == 1
    assert doc["registry"]["loop_risk"] is True
    probe, delete = doc["registry"]["tag_delete_probe"], doc["registry"]["tag_delete"]
    assert probe["status"] == 200
    assert "DELETE" in probe["allow"]
    assert probe["supports_tag_delete"] is True
    assert delete["status"] == 400
    assert delete["error_code"] == "DIGEST_INVALID"
    assert delete["gitlab_counts_success"] is False
    fixes = doc["registry"]["fixes"]
    assert "17.6" in fixes[0]
    assert "3.1.1" in fixes[1]
    assert "stub on --mode proxy" in fixes[2]
    assert "digest" in fixes[3]
    assert _check(doc, "registry_url")["ok"] is True
    assert _check(doc, "registry_tag_delete")["ok"] is False
    assert all({"name", "ok", "detail"} <= set(c) for c in doc["checks"])
    assert '"OPTIONS /v2/name/manifests/tag HTTP/1.1" 200' in log  # GitLab's literal probe path
    assert "DELETE /v2/glcleanup-doctor/probe-" in log


@needs_registry
def test_delete_disabled_405_is_explained(tmp_path: Path) -> None:
    with RegistryProcess(tmp_path / "reg", delete_enabled=False) as reg:
        code, doc = _doctor("--registry-url", reg.url)
    assert code == 1
    assert doc["registry"]["tag_delete"]["status"] == 405
    assert doc["registry"]["tag_delete"]["error_code"] == "UNSUPPORTED"
    assert "storage.delete.enabled" in doc["registry"]["explanation"]
    assert doc["registry"]["loop_risk"] is True  # the probe still says DELETE, every deletion fails


def test_nothing_configured_is_all_skipped_and_exit_0() -> None:
    code, doc = _doctor()
    assert code == 0
    assert all(c["ok"] and c.get("skipped") for c in doc["checks"])
    assert doc["registry"] == {"tag_delete_probe": None, "tag_delete": None, "loop_risk": False}


@pytest.fixture
def http() -> Iterator[Callable[[Handler], str]]:
    servers: list[ThreadingHTTPServer] = []

    def serve(handler: Handler) -> str:
        class _H(BaseHTTPRequestHandler):
            def _any(self) -> None:
                status, headers, body = handler(self)
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_OPTIONS = do_DELETE = do_HEAD = _any

            def log_message(self, *args: object) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_registry_that_refuses_the_probe_is_safe(http: Callable[[Handler], str]) -> None:
    def handler(req: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if req.command == "GET" and req.path == "/v2/":
            return 200, {"Docker-Distribution-Api-Version": "registry/2.0"}, b"{}"
        return 404, {}, b'{"errors":[{"code":"NOT_FOUND"}]}'  # e.g. the proxy stub's answer to OPTIONS

    code, doc = _doctor("--registry-url", http(handler))
    assert code == 0
    assert doc["registry"]["loop_risk"] is False
    assert doc["registry"]["tag_delete_probe"]["supports_tag_delete"] is False


def test_token_registry_is_inconclusive_not_alarming(http: Callable[[Handler], str]) -> None:
    code, doc = _doctor("--registry-url", http(lambda req: (401, {"WWW-Authenticate": "Bearer x"}, b"{}")))
    assert code == 0
    assert doc["registry"]["loop_risk"] is False
    assert "401" in doc["registry"]["explanation"]


def test_unreachable_registry_fails_the_check() -> None:
    code, doc = _doctor("--registry-url", f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert _check(doc, "registry_url")["ok"] is False
    assert "cannot reach" in _check(doc, "registry_url")["detail"]


@pytest.mark.parametrize(("admin", "expected"), [(True, 0), (False, 1)])
def test_api_token_and_admin_rights(http: Callable[[Handler], str], admin: bool, expected: int) -> None:
    seen: list[str | None] = []

    def handler(req: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        seen.append(req.headers.get("PRIVATE-TOKEN"))
        if req.path == "/api/v4/user":
            return 200, {"Content-Type": "application/json"}, json.dumps(
                {"id": 1, "username": "root", "is_admin": admin}).encode()
        if req.path == "/api/v4/version":
            return 200, {"Content-Type": "application/json"}, b'{"version":"17.3.5-ee","revision":"x"}'
        return 404, {}, b"{}"

    code, doc = _doctor("--url", http(handler), env={"GITLAB_PRIVATE_TOKEN": "glpat-secret-value"})
    check = _check(doc, "gitlab_api")
    assert code == expected
    assert check["ok"] is admin
    assert "17.3.5" in check["detail"]
    assert "glpat-secret-value" not in json.dumps(doc)
    assert "glpat-secret-value" in seen


def test_runner_failure_and_local_registry_host() -> None:
    code, doc = _doctor("--rails-host", "local", "--rails-runner", "false", "--registry-host", "local")
    assert code == 1
    assert _check(doc, "rails_runner")["ok"] is False
    assert _check(doc, "registry_host")["ok"] is True
    assert _check(doc, "registry_host")["detail"].startswith("reachable: ")


def test_table_output_shows_the_verdict(tmp_path: Path) -> None:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry missing")
    with RegistryProcess(tmp_path / "reg") as reg:
        result = CliRunner().invoke(app, ["doctor", "--registry-url", reg.url, "-o", "table"])
    assert result.exit_code == 1
    assert "loop risk: YES" in result.stdout
    assert "fix 1: upgrade GitLab to 17.6" in result.stdout
