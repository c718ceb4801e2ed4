"""`doctor`: check every configured connection and replay GitLab's probe against the registry.

A check is `{"name", "ok", "detail"}` (plus `"skipped": true` when its setting is absent, which
is not a failure). The registry section tells whether GitLab would loop against `--registry-url`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from glcleanup import gitlab_facts
from glcleanup.errors import CheckFailed, CheckSkipped, GlcleanupError
from glcleanup.gitlab import api as gitlab_api
from glcleanup.gitlab import rails
from glcleanup.ops import probe as registry
from glcleanup.settings import Settings
from glcleanup.transport import open_host


@dataclass
class DoctorReport:
    checks: list[dict[str, Any]] = field(default_factory=list)
    registry: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(not c["ok"] for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"checks": self.checks, "registry": self.registry}


def _check(settings: Settings, name: str, fn: Callable[[], str]) -> dict[str, Any]:
    """Run one check; any failure becomes ok=false with a one-line, token-free detail."""
    try:
        return {"name": name, "ok": True, "detail": settings.redact(fn())}
    except CheckSkipped as skip:
        return {"name": name, "ok": True, "skipped": True, "detail": str(skip)}
    except GlcleanupError as exc:
        return {"name": name, "ok": False, "detail": settings.redact(str(exc))}
    except Exception as exc:  # a doctor reports, it does not crash
        return {"name": name, "ok": False, "detail": settings.redact(f"{type(exc).__name__}: {exc}")}


def check_api(settings: Settings, facts: dict[str, Any]) -> str:
    """Token accepted (`gl.auth()`) and an admin's (`gl.user.is_admin`): what scan/stop-loop need."""
    if not settings.url:
        raise CheckSkipped("skipped: no --url / GITLAB_URL")
    settings.require_api()
    gl = gitlab_api.connect(settings)  # authenticates
    version = gitlab_api.server_version(gl)
    facts["gitlab_version"] = version
    user = gl.user
    name = getattr(user, "username", "?")
    if not getattr(user, "is_admin", False):
        raise CheckFailed(f"token of {name} works on GitLab {version} but is not an admin's: "
                          "scan and stop-loop need an admin token")
    return f"{name} (admin) on GitLab {version}"


def check_rails(settings: Settings, facts: dict[str, Any]) -> str:
    if not settings.rails_host:
        raise CheckSkipped("skipped: no --rails-host")
    result = rails.ping(settings)
    facts.setdefault("gitlab_version", result.get("gitlab_version"))
    facts["retry_cap"] = result.get("retry_cap")
    return (f"`{settings.rails_runner}` booted on {settings.rails_host}: GitLab {result.get('gitlab_version')}, "
            f"{result.get('repositories')} container repositories")


def check_registry_host(settings: Settings) -> str:
    if not settings.registry_host:
        raise CheckSkipped("skipped: no --registry-host (logs and stub default to this machine)")
    host = open_host(settings.registry_host, settings.ssh_options)
    try:
        result = host.run(["uname", "-n"], timeout=60)
    finally:
        host.close()
    if result.exit_code != 0:
        raise CheckFailed(f"`uname -n` failed on {settings.registry_host}: {result.error_text.strip()}")
    return f"reachable: {result.text.strip()}"


def check_registry_url(settings: Settings) -> str:
    if not settings.registry_url:
        raise CheckSkipped("skipped: no --registry-url")
    answer = registry.ping(settings.registry_url, settings.ssl_verify)
    if not answer["ok"]:
        raise CheckFailed(f"GET /v2/ answered {answer['status']} (GitLab needs 200)")
    kind = "GitLab container registry" if answer["gitlab_registry"] else "third-party registry (not GitLab's)"
    return f"GET /v2/ {answer['status']}, {answer['api_version'] or 'no API version header'}; {kind}"


def diagnose(settings: Settings) -> DoctorReport:
    """All checks, then the probe replay (only when the registry URL answered)."""
    report = DoctorReport()
    facts: dict[str, Any] = {}
    report.checks.append(_check(settings, "gitlab_api", lambda: check_api(settings, facts)))
    report.checks.append(_check(settings, "rails_runner", lambda: check_rails(settings, facts)))
    report.checks.append(_check(settings, "registry_host", lambda: check_registry_host(settings)))
    url_check = _check(settings, "registry_url", lambda: check_registry_url(settings))
    report.checks.append(url_check)
    report.registry = {"tag_delete_probe": None, "tag_delete": None, "loop_risk": False}
    if url_check["ok"] and not url_check.get("skipped") and settings.registry_url:
        try:
            report.registry = registry.probe(settings.registry_url, settings.ssl_verify)
        except GlcleanupError as exc:
            report.checks.append({"name": "registry_tag_delete", "ok": False, "detail": str(exc)})
            return report
        report.checks.append({"name": "registry_tag_delete", "ok": not report.registry["loop_risk"],
                              "detail": report.registry["explanation"]})
    if facts.get("gitlab_version"):
        version = str(facts["gitlab_version"])
        # the runner knows the 17.5 flag; the API alone does not
        cap = facts.get("retry_cap") or gitlab_facts.retry_cap(version)
        report.registry["gitlab_version"] = version
        report.registry["retry_cap"] = str(cap)
        if report.registry.get("fixes"):
            report.registry["fixes"] = registry.fixes(cap)
    return report


__all__ = ["DoctorReport", "diagnose"]
