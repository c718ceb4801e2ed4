"""The lab's side of GitLab's registry client: what one deletion pass sends and records.

Shared by the deletion worker (`worker.py`) and the cleanup-policy loop (`policy.py`); each
constant names the GitLab file it follows (see README.md).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import requests

MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
# lib/container_registry/base_client.rb: ACCEPTED_TYPES on every ContainerRegistry::Client call (Faraday
# joins the array with ", "); gitlab_api_client.rb: JSON_TYPE on /gitlab/v1/ calls.
ACCEPT_V2 = f"{MT_MANIFEST}, {MT_OCI_MANIFEST}"
ACCEPT_GITLAB_API = "application/json"
TAGS_PAGE_SIZE = 10000           # ContainerRegistry::Client::DEFAULT_TAGS_PAGE_SIZE (tags/list?n=)
MAX_LIST_SIZE = 200              # application setting container_registry_cleanup_tags_service_max_list_size
# Client#generate_empty_manifest: Gitlab::Json.pretty_generate({config: {}}) as Ruby's json 2.6 prints it
# (an empty object as "{\n  }"): the 21-byte dummy config blob.
DUMMY_CONFIG = b'{\n  "config": {\n  }\n}'

class TagDeleteError(Exception):
    """The tag-delete service returned :error (the message GitLab logs)."""


@dataclass
class PassRecord:
    """One `perform_work` that claimed a row: what it did and how it ended."""

    repository_id: int
    path: str
    version: str
    kind: str = "delete"                  # delete | policy (the cleanup-policy loop)
    outcome: str = ""                     # destroyed | rescheduled | failed | gone | cleanup_*
    service: str = ""                     # gitlab | third_party (cleanup tags service)
    delete_path: str = ""                 # tag_delete | third_party (delete tags service)
    tags: list[str] = field(default_factory=list)
    truncated: int = 0                    # tags listed when the third-party list limit cut the pass short
    message: str = ""
    requests: list[str] = field(default_factory=list)   # "METHOD /path -> status"
    started_at: float = 0.0
    finished_at: float = 0.0


class RegistryCalls:
    """The HTTP side of one pass: GitLab's registry clients, recording every request."""

    def __init__(self, base: str, version: str, token: str, record: PassRecord, verify: bool | str,
                 timeout: float, conn: sqlite3.Connection | None = None) -> None:
        self.conn = conn
        self.base = base.rstrip("/")
        self.record = record
        self.verify = verify
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": f"GitLab/{version}", "Authorization": f"Bearer {token}",
                                     "Accept": ACCEPT_V2})

    def close(self) -> None:
        self.session.close()

    def call(self, method: str, path_or_url: str, **kw: Any) -> requests.Response:
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        resp = self.session.request(method, url, verify=self.verify, timeout=self.timeout,
                                    allow_redirects=False, **kw)
        shown = url[len(self.base):] if url.startswith(self.base) else url
        self.record.requests.append(f"{method} {shown} -> {resp.status_code}")
        return resp

    # --- lib/container_registry/gitlab_api_client.rb / client.rb -------------------------------
    def supports_gitlab_api(self) -> bool:
        status = self.call("GET", "/gitlab/v1/", headers={"Accept": ACCEPT_GITLAB_API}).status_code
        return 200 <= status < 300 or status == 401

    def supports_tag_delete(self, probe: str) -> bool:
        resp = self.call("OPTIONS", probe)
        return resp.ok and "DELETE" in resp.headers.get("Allow", "")

    def _json(self, resp: requests.Response) -> Any:
        if not 200 <= resp.status_code < 300:
            return None                       # response_body: body only on 2xx
        try:
            return resp.json()
        except ValueError:
            return None

    def v2_tags(self, path: str) -> list[str]:
        body = self._json(self.call("GET", f"/v2/{path}/tags/list?n={TAGS_PAGE_SIZE}"))
        return [str(t) for t in (body or {}).get("tags") or []] if isinstance(body, dict) else []

    def gitlab_tags(self, path: str) -> list[str]:
        body = self._json(self.call("GET", f"/gitlab/v1/repositories/{path}/tags/list/",
                                    headers={"Accept": ACCEPT_GITLAB_API}))
        if isinstance(body, list):
            return [str(t["name"]) for t in body if isinstance(t, dict) and "name" in t]
        return []

    def delete_ok(self, path: str) -> bool:
        """delete_if_exists: any 2xx, or 404."""
        status = self.call("DELETE", path).status_code
        return 200 <= status < 300 or status == 404

    def upload_blob(self, path: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        resp = self.call("POST", f"/v2/{path}/blobs/uploads/", data=b"")
        location = resp.headers.get("Location")
        if not resp.ok or not location:
            raise TagDeleteError("could not generate manifest")
        put = self.call("PUT", urljoin(self.base + "/", location), params={"digest": digest}, data=data,
                        headers={"Content-Type": "application/octet-stream"})
        if not put.ok:
            raise TagDeleteError("could not generate manifest")
        return digest
