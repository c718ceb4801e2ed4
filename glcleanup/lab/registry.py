"""The lab's real registry: Debian's `docker-registry` (Distribution 2.8) on loopback, plus push helpers.

The incident only reproduces against the real thing (400 DIGEST_INVALID on tag DELETE, the
schema1 rewrite without an Accept header), so the lab runs the actual binary with its own
config, storage and log file, and pushes images over `/v2` without a docker engine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urljoin

import requests

MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REGISTRY_BINARY = "docker-registry"
Verify = bool | str


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on loopback (racy by nature, fine for a lab)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0,
              proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until something accepts on host:port; fail fast if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


def render_config(storage: Path, port: int, delete_enabled: bool, tls: tuple[str, str] | None,
                  log_format: str) -> str:
    """The registry's config.yml as JSON (a YAML subset), so no value needs YAML quoting rules."""
    http: dict[str, Any] = {
        "addr": f"127.0.0.1:{port}",
        "secret": "glcleanup-lab-secret",
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    if tls:
        http["tls"] = {"certificate": tls[0], "key": tls[1]}
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": log_format, "accesslog": {"disabled": False},
                "fields": {"service": "registry"}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": delete_enabled},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": http,
    }
    return json.dumps(config, indent=2) + "\n"


class RegistryProcess:
    """One `docker-registry serve` with config, storage and one combined log file under `root`."""

    def __init__(self, root: Path, port: int = 0, delete_enabled: bool = True,
                 tls: tuple[str, str] | None = None, log_format: str = "text",
                 log_path: Path | None = None) -> None:
        if log_format not in ("text", "json"):
            raise ValueError("log_format must be 'text' or 'json'")
        self.root = Path(root)
        self.port = port or free_port()
        self.delete_enabled = delete_enabled
        self.tls = tls
        self.log_format = log_format
        self.log_path = Path(log_path) if log_path else self.root / "registry.log"
        self.config_path = self.root / "config.yml"
        self.storage = self.root / "storage"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 10.0) -> RegistryProcess:
        if shutil.which(REGISTRY_BINARY) is None:
            raise FileNotFoundError(f"{REGISTRY_BINARY} not found on PATH (apt install docker-registry)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self.storage, self.port, self.delete_enabled, self.tls,
                                                  self.log_format))
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        try:
            wait_port(self.port, timeout=timeout, proc=self.proc)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM our own pid (the registry exits at once), SIGKILL as a fallback; idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --- pushing and reading images over /v2 ---------------------------------------------------------

def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(payload: bytes) -> tuple[bytes, str]:
    """A one-file gzipped tar layer and its diff_id (digest of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        info.mtime = 0
        tf.addfile(info, io.BytesIO(payload))
    tar = raw.getvalue()
    return gzip.compress(tar, mtime=0), _sha(tar)


def upload_blob(session: requests.Session, url: str, repo: str, data: bytes, verify: Verify = True) -> str:
    """Monolithic blob upload (HEAD, POST uploads/, PUT Location?digest=); returns the digest."""
    digest = _sha(data)
    base = url.rstrip("/")
    if session.head(f"{base}/v2/{repo}/blobs/{digest}", verify=verify, timeout=30).status_code == 200:
        return digest
    resp = session.post(f"{base}/v2/{repo}/blobs/uploads/", data=b"", verify=verify, timeout=30)
    if resp.status_code != 202 or "Location" not in resp.headers:
        raise RuntimeError(f"blob upload start failed: {resp.status_code} {resp.text[:200]}")
    location = urljoin(base + "/", resp.headers["Location"])
    resp = session.put(location, params={"digest": digest}, data=data, verify=verify, timeout=30,
                       headers={"Content-Type": "application/octet-stream"})
    if resp.status_code != 201:
        raise RuntimeError(f"blob upload failed: {resp.status_code} {resp.text[:200]}")
    return digest


def push_image(url: str, repo: str, tag: str, *, with_history: bool = True, verify: Verify = True,
               payload: bytes | None = None) -> str:
    """Push config + one layer + a schema2 manifest; return the manifest digest.

    With `with_history` the config carries `history`, so a HEAD without Accept makes 2.8 answer
    with a rewritten schema1 manifest and a different digest (the real-world pitfall).
    """
    base = url.rstrip("/")
    body = payload if payload is not None else f"{repo}:{tag} {time.time_ns()}\n".encode()
    layer, diff_id = _layer(body)
    config_doc: dict[str, Any] = {
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if with_history:
        config_doc["created"] = "2026-01-01T00:00:00Z"
        config_doc["history"] = [{"created": "2026-01-01T00:00:00Z",
                                  "created_by": "/bin/sh -c #(nop) ADD file:hello.txt in /"}]
    config = json.dumps(config_doc, separators=(",", ":")).encode()
    with requests.Session() as session:
        layer_digest = upload_blob(session, base, repo, layer, verify)
        config_digest = upload_blob(session, base, repo, config, verify)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "size": len(config), "digest": config_digest},
            "layers": [{"mediaType": MT_LAYER, "size": len(layer), "digest": layer_digest}],
        }, indent=3).encode()
        resp = session.put(f"{base}/v2/{repo}/manifests/{tag}", data=manifest, verify=verify, timeout=30,
                           headers={"Content-Type": MT_MANIFEST})
    if resp.status_code != 201:
        raise RuntimeError(f"manifest push failed: {resp.status_code} {resp.text[:200]}")
    return resp.headers.get("Docker-Content-Digest") or _sha(manifest)


def list_tags(url: str, repo: str, *, verify: Verify = True) -> list[str]:
    """Tags of `repo`; an unknown repository (404 NAME_UNKNOWN) has none."""
    resp = requests.get(f"{url.rstrip('/')}/v2/{repo}/tags/list", verify=verify, timeout=30)
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return list(resp.json().get("tags") or [])


def manifest_digest(url: str, repo: str, tag: str, *, verify: Verify = True) -> str | None:
    """The schema2 digest of `repo:tag` (HEAD with the schema2 Accept header), None when unknown."""
    resp = requests.head(f"{url.rstrip('/')}/v2/{repo}/manifests/{tag}", verify=verify, timeout=30,
                         headers={"Accept": MT_MANIFEST})
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.headers.get("Docker-Content-Digest")
