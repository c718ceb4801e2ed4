"""What the lab worker puts on the wire, checked against GitLab's code: headers, `tags/list?n=10000`, the
third-party list limit (200 tags a pass, the pass then counts as failed), and the dummy config blob and
manifest bytes as GitLab's Ruby (`Gitlab::Json.pretty_generate`) produces them, computed here by Ruby."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from glcleanup.lab import schema, seed
from glcleanup.lab.worker import DeletionWorker

pytestmark = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby missing")
TAGS = [f"t{i:03d}" for i in range(250)]


class Recorder(BaseHTTPRequestHandler):
    """A Distribution 2.x registry as far as the third-party path needs one, recording every request."""

    log: list[dict[str, Any]]

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.log.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        return body

    def do_GET(self) -> None:
        self._record()
        if self.path.startswith("/v2/grp/app/tags/list"):
            self._answer(200, json.dumps({"name": "grp/app", "tags": TAGS}).encode(),
                         {"Content-Type": "application/json"})
        else:
            self._answer(404)

    def do_OPTIONS(self) -> None:
        self._record()
        self._answer(404)  # no tag delete: GitLab takes the ThirdParty path

    def do_POST(self) -> None:
        self._record()
        self._answer(202, headers={"Location": "/v2/grp/app/blobs/uploads/u1?_state=x"})

    def do_PUT(self) -> None:
        body = self._record()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self._answer(201, headers={"Docker-Content-Digest": digest})

    def do_DELETE(self) -> None:
        self._record()
        self._answer(202)

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    log: list[dict[str, Any]] = []
    handler = type("Handler", (Recorder,), {"log": log})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


def ruby_pretty(value: object) -> bytes:
    """Ruby's JSON.pretty_generate of `value` (GitLab's Gitlab::Json.pretty_generate)."""
    return subprocess.run(["ruby", "-rjson", "-e", "print JSON.pretty_generate(JSON.parse(STDIN.read))"],
                          input=json.dumps(value).encode(), capture_output=True, check=True, timeout=30).stdout


@pytest.mark.parametrize("version", ["17.3.5", "17.6.0"])
def test_third_party_pass_on_the_wire(tmp_path: Path, recorder: tuple[str, list[dict[str, Any]]],
                                      version: str) -> None:
    url, log = recorder
    db = tmp_path / "gitlab.sqlite3"
    schema.create(db, version, url)
    conn = schema.connect(db)
    rid = seed.create_repository(conn, seed.create_project(conn, seed.ensure_group(conn, "grp"), "app"), "",
                                 status="delete_scheduled")
    worker = DeletionWorker(db, slots=1, policy_slots=0)
    record = worker.perform_work(conn)
    assert record is not None
    assert record.outcome == "rescheduled"          # truncated: the pass counts as failed
    assert record.truncated == len(TAGS)
    listing = [e for e in log if e["path"].startswith("/v2/grp/app/tags/list")]
    assert [e["path"] for e in listing] == ["/v2/grp/app/tags/list?n=10000"]
    accept_v2 = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
    for entry in log:
        assert entry["headers"]["User-Agent"] == f"GitLab/{version}"
        expected = "application/json" if entry["path"].startswith("/gitlab/v1/") else accept_v2
        assert entry["headers"]["Accept"] == expected, entry["path"]
    blob = next(e for e in log if e["method"] == "PUT" and "/blobs/uploads/" in e["path"])
    assert blob["body"] == ruby_pretty({"config": {}})
    assert len(blob["body"]) == 21
    digest = "sha256:" + hashlib.sha256(blob["body"]).hexdigest()
    manifests = [e for e in log if e["method"] == "PUT" and "/manifests/" in e["path"]]
    assert len(manifests) == 200                     # container_registry_cleanup_tags_service_max_list_size
    assert manifests[0]["body"] == ruby_pretty({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 21, "digest": digest}})
    assert b"layers" not in manifests[0]["body"]
    assert [e["method"] for e in log if e["method"] == "DELETE"] == ["DELETE"]  # one delete by digest
    row = conn.execute("SELECT * FROM container_repositories WHERE id = ?", (rid,)).fetchone()
    assert row["status"] == 0
    if version == "17.6.0":
        assert row["failed_deletion_count"] == 1       # +1 and a backoff although 200 tags went
        assert row["next_delete_attempt_at"] is not None
    conn.close()
