"""What `stop-loop --mode done` leaves in the registry: the removed rows' tags and digests, for GC.

The rows are gone from GitLab, the image data is not: list it (when the registry answers without
auth) so the admin can delete by digest and run the registry's garbage collector.
"""

from __future__ import annotations

from typing import Any

import requests

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
MAX_TAGS = 200
GC_HINT = ("the rows are gone but the images stay in the registry: delete each digest "
           "(DELETE /v2/<path>/manifests/<digest>), then run the registry's garbage collector "
           "(`registry garbage-collect --delete-untagged /etc/docker/registry/config.yml`)")


def registry_leftovers(url: str | None, paths: list[str], timeout: float = 10.0) -> dict[str, Any]:
    """Paths whose rows were removed, with tags and digests when the registry answers without auth."""
    out: dict[str, Any] = {"registry_url": url, "repositories": [{"path": p} for p in paths], "note": GC_HINT}
    if not paths:
        return out
    if not url:
        out["error"] = "no --registry-url: tags and digests not listed"
        return out
    base = url.rstrip("/")
    with requests.Session() as session:
        session.headers["User-Agent"] = "glcleanup (leftover listing)"
        for entry in out["repositories"]:
            try:
                _list_repository(session, base, entry, timeout)
            except requests.RequestException as exc:
                out["error"] = f"registry at {base} unreachable: {type(exc).__name__}"
                break
    return out


def _list_repository(session: requests.Session, base: str, entry: dict[str, Any], timeout: float) -> None:
    resp = session.get(f"{base}/v2/{entry['path']}/tags/list", timeout=timeout)
    if resp.status_code == 401:
        entry["error"] = "the registry needs authentication (401): list with registry credentials"
        return
    if resp.status_code == 404:
        entry["tags"] = []
        return
    if not resp.ok:
        entry["error"] = f"tags/list answered {resp.status_code}"
        return
    try:
        tags = [str(t) for t in (resp.json().get("tags") or [])]
    except (ValueError, AttributeError):
        entry["error"] = "tags/list answered something that is not JSON"
        return
    entry["tags"] = []
    for tag in sorted(tags)[:MAX_TAGS]:
        head = session.head(f"{base}/v2/{entry['path']}/manifests/{tag}", timeout=timeout,
                            headers={"Accept": MANIFEST_ACCEPT})
        entry["tags"].append({"tag": tag, "digest": head.headers.get("Docker-Content-Digest") if head.ok else None})
    if len(tags) > MAX_TAGS:
        entry["truncated"] = len(tags)
