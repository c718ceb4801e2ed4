"""`scan`: which container repositories are stuck in deletion, from the API, the runner, or both.

Both sources describe the same rows; they are merged by repository id. The runner's view
is exact (timestamps, retry counters); the API's is what any admin token can see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from glcleanup import gitlab_facts, validate
from glcleanup.errors import UsageError
from glcleanup.gitlab import api as gitlab_api
from glcleanup.gitlab.rails import runner_from_settings
from glcleanup.gitlab_facts import LOOPING_STATES
from glcleanup.logs import analysis as logs
from glcleanup.settings import Settings
from glcleanup.transport import open_host

SOURCES = ("api", "rails", "all")


@dataclass
class ScanRequest:
    source: str = "all"
    projects: list[str] = field(default_factory=list)
    group: str | None = None
    registry_logs: list[str] = field(default_factory=list)
    since: timedelta | None = timedelta(minutes=15)

    def validated(self) -> ScanRequest:
        """Check every input before anything is contacted (exit 2 on bad input)."""
        if self.source not in SOURCES:
            raise UsageError(f"--source must be one of {', '.join(SOURCES)}")
        return ScanRequest(
            source=self.source,
            projects=[validate.project_path(p) for p in self.projects],
            group=validate.group_path(self.group) if self.group else None,
            registry_logs=list(self.registry_logs),
            since=self.since,
        )


@dataclass
class ScanReport:
    gitlab: dict[str, Any] = field(default_factory=dict)
    repositories: list[dict[str, Any]] = field(default_factory=list)
    loops: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cleanup_policies: list[dict[str, Any]] = field(default_factory=list)
    log_sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def in_trouble(self) -> bool:
        """Exit 1 when something still loops or waits to loop; parked (delete_failed) rows alone do not."""
        return bool(self.loops) or any(r["status"] in LOOPING_STATES for r in self.repositories)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "gitlab": self.gitlab,
            "repositories": self.repositories,
            "loops": self.loops,
            "warnings": self.warnings,
            "cleanup_policies": self.cleanup_policies,
        }
        if self.log_sources:
            doc["log_sources"] = self.log_sources
        return doc


def merge(rows_by_source: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge rows by id; the runner's exact fields win, `sources` lists who saw each row."""
    merged: dict[int, dict[str, Any]] = {}
    for source in ("api", "rails"):
        for row in rows_by_source.get(source, []):
            current = merged.setdefault(int(row["id"]), {"sources": []})
            if source == "rails" or "status" not in current or current.get("status") == "unknown":
                current.update({k: v for k, v in row.items() if k != "sources"})
            else:
                for key, value in row.items():
                    current.setdefault(key, value)
            current["sources"].append(source)
    return [{**{k: v for k, v in merged[i].items() if k != "sources"}, "sources": merged[i]["sources"]}
            for i in sorted(merged)]


def scan_rails(settings: Settings, request: ScanRequest) -> dict[str, Any]:
    runner = runner_from_settings(settings)
    try:
        result: dict[str, Any] = runner.run("scan", {"projects": request.projects, "group": request.group})
    finally:
        runner.host.close()
    return result


def scan(settings: Settings, request: ScanRequest, progress: gitlab_api.Progress | None = None) -> ScanReport:
    """Run the requested sources and merge them; log evidence is added when sources are given."""
    request = request.validated()
    report = ScanReport(gitlab={"url": settings.url, "version": None})
    rows: dict[str, list[dict[str, Any]]] = {}
    use_api = request.source in ("api", "all")
    use_rails = request.source in ("rails", "all")
    if request.source == "all" and not settings.rails_host:
        use_rails = False
        report.warnings.append("no --rails-host: scanned through the REST API only")
    if request.source == "all" and not settings.url and settings.rails_host:
        use_api = False
        report.warnings.append("no --url: scanned through gitlab-rails runner only")
    if use_api:
        settings.require_api()
        gl = gitlab_api.connect(settings)
        api = gitlab_api.scan_repositories(gl, projects=request.projects or None, group=request.group,
                                           progress=progress)
        report.gitlab["version"] = api.version
        rows["api"] = [dict(r, sources=["api"]) for r in api.repositories]
        report.warnings.extend(api.warnings)
    if use_rails:
        result = scan_rails(settings, request)
        report.gitlab["version"] = report.gitlab.get("version") or result.get("gitlab_version")
        report.gitlab["retry_cap"] = result.get("retry_cap")
        rows["rails"] = [dict(r, sources=["rails"]) for r in result.get("repositories", [])]
        report.cleanup_policies = list(result.get("cleanup_policies", []))
        looping = any(r["status"] in LOOPING_STATES for r in rows["rails"])
        if looping and gitlab_facts.loops_forever(result.get("retry_cap")):
            report.warnings.append(
                f"GitLab {result.get('gitlab_version')} has no deletion retry cap (17.6+): a failing deletion "
                "retries forever; see `glcleanup stop-loop`"
            )
    report.repositories = merge(rows)
    if request.registry_logs:
        host = open_host(settings.registry_host or "local", settings.ssh_options)
        try:
            evidence = logs.analyze_sources(host, request.registry_logs, request.since)
        finally:
            host.close()
        report.loops = list(evidence.loops)
        report.log_sources = list(evidence.sources)
    return report
