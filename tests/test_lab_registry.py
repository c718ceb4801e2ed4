"""The lab's real Distribution 2.8 registry: start/stop, pushes, and the behaviours the incident needs."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from glcleanup.lab.registry import RegistryProcess, list_tags, manifest_digest, push_image

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry missing")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path / "reg") as reg:
        yield reg


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_start_stop_frees_port_and_logs(tmp_path: Path) -> None:
    reg = RegistryProcess(tmp_path / "r").start()
    try:
        assert reg.url == f"http://127.0.0.1:{reg.port}"
        resp = requests.get(f"{reg.url}/v2/", timeout=5)
        assert resp.status_code == 200
        assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    finally:
        reg.stop()
    reg.stop()  # idempotent
    assert _port_closed(reg.port)
    log = reg.log_path.read_text()
    assert 'msg="listening on 127.0.0.1:' in log
    assert '"GET /v2/ HTTP/1.1" 200' in log  # access log (stdout) lands in the same file


def test_push_list_and_digest(registry: RegistryProcess) -> None:
    digest = push_image(registry.url, "grp/sub/app", "latest")
    push_image(registry.url, "grp/sub/app", "v1")
    assert sorted(list_tags(registry.url, "grp/sub/app")) == ["latest", "v1"]
    assert manifest_digest(registry.url, "grp/sub/app", "latest") == digest
    assert manifest_digest(registry.url, "grp/sub/app", "nosuch") is None
    assert list_tags(registry.url, "no/such") == []


def test_history_makes_the_accept_pitfall_real(registry: RegistryProcess) -> None:
    digest = push_image(registry.url, "user/repo", "latest", with_history=True)
    bare = requests.head(f"{registry.url}/v2/user/repo/manifests/latest", timeout=5)
    assert bare.status_code == 200
    assert "v1+prettyjws" in bare.headers["Content-Type"]
    assert bare.headers["Docker-Content-Digest"] != digest
    wrong = requests.delete(f"{registry.url}/v2/user/repo/manifests/{bare.headers['Docker-Content-Digest']}",
                            timeout=5)
    assert wrong.status_code == 404


def test_tag_delete_is_digest_invalid_and_digest_delete_works(registry: RegistryProcess) -> None:
    digest = push_image(registry.url, "user/repo", "latest")
    probe = requests.options(f"{registry.url}/v2/name/manifests/tag", timeout=5)
    assert probe.status_code == 200
    assert "DELETE" in probe.headers["Allow"]
    by_tag = requests.delete(f"{registry.url}/v2/user/repo/manifests/latest", timeout=5)
    assert by_tag.status_code == 400
    assert by_tag.json()["errors"][0]["code"] == "DIGEST_INVALID"
    by_digest = requests.delete(f"{registry.url}/v2/user/repo/manifests/{digest}", timeout=5)
    assert by_digest.status_code == 202
    assert list_tags(registry.url, "user/repo") == []
    assert 'err.code="digest invalid"' in registry.log_path.read_text()


def test_delete_disabled_and_json_log(tmp_path: Path) -> None:
    with RegistryProcess(tmp_path / "r", delete_enabled=False, log_format="json",
                         log_path=tmp_path / "reg.json.log") as reg:
        digest = push_image(reg.url, "user/repo", "latest", with_history=False)
        resp = requests.delete(f"{reg.url}/v2/user/repo/manifests/{digest}", timeout=5)
        assert resp.status_code == 405
    entries = [json.loads(line) for line in (tmp_path / "reg.json.log").read_text().splitlines()
               if line.startswith("{")]
    assert any(e.get("http.response.status") == 405 and e.get("http.request.method") == "DELETE"
               for e in entries)


def test_tls(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    with RegistryProcess(tmp_path / "r", tls=(str(cert), str(key))) as reg:
        assert reg.url.startswith("https://")
        digest = push_image(reg.url, "user/repo", "latest", verify=str(ca_file))
        assert manifest_digest(reg.url, "user/repo", "latest", verify=str(ca_file)) == digest
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{reg.url}/v2/", timeout=5)
