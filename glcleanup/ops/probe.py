"""Registry HTTP checks: replay GitLab's tag-delete probe and see what the registry really does.

GitLab (>= ~16.6) asks `OPTIONS /v2/name/manifests/tag` (literally that path) and, on a 2xx with
`Allow: ...DELETE...`, deletes tags with `DELETE /v2/<path>/manifests/<tag>`. It counts any 2xx
or 404 as success. Distribution 2.x says yes to the probe but answers the tag DELETE with
400 DIGEST_INVALID (or 405 UNSUPPORTED when deletes are disabled): before GitLab 17.6 that
deletion retries forever. The replay uses a random repository that cannot exist, so nothing
is deleted.
"""

from __future__ import annotations

import secrets
from typing import Any

import requests

from glcleanup import __version__ as _version
from glcleanup import gitlab_facts
from glcleanup.errors import ConnectError

USER_AGENT = f"glcleanup/{_version} (GitLab probe replay)"
TIMEOUT = 15.0
Verify = bool | str

UPGRADE_FIX = ("upgrade GitLab to 17.6 or later: a failing deletion stops after 10 tries (delete_failed) instead "
               "of looping forever")
FIXES = [
    UPGRADE_FIX,
    "upgrade the registry to Distribution v3 (3.1.1 or later), which deletes by tag, or move to GitLab's "
    "container registry",
    "meanwhile, `glcleanup stub on --mode proxy` answers the probe with 404 so GitLab deletes by digest "
    "(pushes and pulls keep working)",
    "or delete the images by digest (DELETE /v2/<path>/manifests/<sha256:...>) and park the rows with "
    "`glcleanup stop-loop`",
]


def _error_code(resp: requests.Response) -> str | None:
    try:
        errors = resp.json().get("errors") or []
        return str(errors[0].get("code")) if errors else None
    except (ValueError, AttributeError, IndexError):
        return None


def _call(session: requests.Session, method: str, url: str, verify: Verify) -> requests.Response:
    try:
        return session.request(method, url, timeout=TIMEOUT, verify=verify, allow_redirects=True,
                               headers={"User-Agent": USER_AGENT})
    except requests.exceptions.SSLError as exc:
        raise ConnectError(f"TLS error talking to {url}: {exc}") from exc
    except requests.RequestException as exc:
        raise ConnectError(f"cannot reach the registry at {url}: {exc}") from exc


def ping(url: str, verify: Verify = True) -> dict[str, Any]:
    """`GET /v2/` (GitLab's `connected?`) and `GET /gitlab/v1/` (GitLab's vendor check)."""
    base = url.rstrip("/")
    with requests.Session() as session:
        v2 = _call(session, "GET", f"{base}/v2/", verify)
        gitlab = _call(session, "GET", f"{base}/gitlab/v1/", verify)
    return {
        "status": v2.status_code,
        "api_version": v2.headers.get("Docker-Distribution-Api-Version"),
        "gitlab_registry": gitlab.status_code in (200, 401) or "gitlab-container-registry-version" in v2.headers,
        "ok": v2.status_code in (200, 401),
    }


def probe(url: str, verify: Verify = True) -> dict[str, Any]:
    """Replay the probe and a harmless tag DELETE; say whether GitLab would loop against this registry."""
    base = url.rstrip("/")
    name = f"glcleanup-doctor/probe-{secrets.token_hex(6)}"
    tag = f"glcleanup-{secrets.token_hex(4)}"
    with requests.Session() as session:
        options = _call(session, "OPTIONS", f"{base}/v2/name/manifests/tag", verify)
        delete = _call(session, "DELETE", f"{base}/v2/{name}/manifests/{tag}", verify)
    allow = options.headers.get("Allow", "")
    says_yes = 200 <= options.status_code < 300 and "DELETE" in allow.upper()
    code = _error_code(delete)
    success = gitlab_facts.delete_counts_as_success(delete.status_code)
    probe_doc = {"request": "OPTIONS /v2/name/manifests/tag", "status": options.status_code, "allow": allow,
                 "supports_tag_delete": says_yes}
    delete_doc = {"request": f"DELETE /v2/{name}/manifests/{tag}", "status": delete.status_code,
                  "error_code": code, "gitlab_counts_success": success}
    auth = 401 in (options.status_code, delete.status_code)
    loop_risk = says_yes and not success and not auth
    return {
        "url": base,
        "tag_delete_probe": probe_doc,
        "tag_delete": delete_doc,
        "loop_risk": loop_risk,
        "explanation": explain(says_yes, delete.status_code, code, auth),
        "fixes": FIXES if loop_risk else [],
    }


def explain(says_yes: bool, status: int, code: str | None, auth: bool) -> str:
    """Why GitLab would or would not loop, in the admin's terms."""
    if auth:
        return ("the registry wants a token (401): the replay needs GitLab's JWT, so the result is "
                "inconclusive; check the registry log with `glcleanup logs` instead")
    if not says_yes:
        return ("the probe is refused, so GitLab uses its digest-based delete path, which this registry "
                "supports: no tag-delete loop")
    if gitlab_facts.delete_counts_as_success(status):
        return f"the probe says yes and a tag DELETE answers {status}, which GitLab counts as success: no loop"
    if status == 405 or code == "UNSUPPORTED":
        return ("deletes are disabled on this registry (storage.delete.enabled: false, 405 UNSUPPORTED), yet "
                "the probe still advertises DELETE: every repository deletion fails and, before GitLab 17.6, "
                "retries forever. Enable `storage: delete: enabled: true` (a Distribution 2.x registry then answers "
                "tag DELETEs with 400 DIGEST_INVALID, the same loop: see the fixes)")
    if status == 400 and code == "DIGEST_INVALID":
        return ("the probe says yes (Allow: DELETE) but a tag DELETE gets 400 DIGEST_INVALID: this is a "
                "Distribution 2.x registry that deletes only by digest. GitLab < 17.6 retries such a "
                "deletion forever (the DIGEST_INVALID loop)")
    return (f"the probe says yes but a tag DELETE gets {status} {code or ''}".rstrip()
            + ": GitLab treats that as a failed deletion and retries it")


def fixes(cap: str | None) -> list[str]:
    """The permanent fixes in order, without the upgrade when this GitLab already caps retries."""
    if cap in (gitlab_facts.RetryCap.NATIVE, gitlab_facts.RetryCap.FEATURE_FLAG):
        return [f for f in FIXES if f != UPGRADE_FIX]
    return list(FIXES)


__all__ = ["FIXES", "explain", "fixes", "ping", "probe"]
