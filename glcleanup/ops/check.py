"""`check`: one monitoring verdict (Nagios plugin conventions) from every configured facet.

Facets, each looked at only when its setting is there (the same settings as the other commands):

* `logs`: the registry log window (`--registry-log`): an ACTIVE loop of failing DELETEs from
  `GitLab/*` above `warn_rate`/`crit_rate` per minute, and the log disk's `hours_to_full` below
  `warn_hours`/`crit_hours`;
* `repositories`: the database state through the API (`--url`; the runner only when asked): rows in
  `delete_scheduled`/`delete_ongoing` for longer than `stuck_minutes` (first seen by this check,
  remembered in the state dir: GitLab rewrites `status_updated_at` on every failed pass, so no column
  says how long a row has been stuck), and `delete_failed` rows (parked by GitLab's retry cap);
* `probe`: doctor's probe replay against `--registry-url` (`loop_risk`);
* `stub`: a glcleanup stub on the registry host (`--stub-dir`) left on past its planned end.

The verdict is evaluated with `nagiosplugin` (metrics, threshold ranges, perfdata); the CLI renders
it. A facet that cannot be read is UNKNOWN with its reason; the overall state ranks
OK < WARNING < UNKNOWN < CRITICAL (Nagios' own service-state severity), so a known loop is never
hidden behind an unreadable second source. Nothing here prints or changes GitLab.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import nagiosplugin

from glcleanup.errors import GlcleanupError, UsageError
from glcleanup.gitlab_facts import DELETION_STATES, LOOPING_STATES, PARKED_STATE
from glcleanup.logs import analysis as logs
from glcleanup.paths import state_dir
from glcleanup.settings import Settings
from glcleanup.transport import open_host

STATUSES = (*DELETION_STATES, "unknown")  # `unknown`: an API without the status field
SOURCES = ("api", "rails", "all", "none")
# Nagios' service-state severity (what Nagios and Icinga use for "worst"): CRITICAL above UNKNOWN.
_SEVERITY = {0: 0, 1: 1, 3: 2, 2: 3}
NAMES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


@dataclass
class CheckRequest:
    """What to look at and the thresholds; strings as typed, checked by `validated()`."""

    registry_logs: list[str] = field(default_factory=list)
    since: timedelta | None = timedelta(minutes=15)
    warn_rate: str = "5"
    crit_rate: str = "60"
    warn_hours: str = "72"
    crit_hours: str = "24"
    stuck_minutes: str = "30"
    source: str = "api"
    projects: list[str] = field(default_factory=list)
    group: str | None = None
    stub_dir: str | None = None
    probe: bool = True

    def validated(self) -> Thresholds:
        """The numbers, or UsageError naming the option (the CLI answers UNKNOWN, exit 3)."""
        if self.source not in SOURCES:
            raise UsageError(f"--source must be one of {', '.join(SOURCES)}")
        values = {name: _number(name, getattr(self, name)) for name in
                  ("warn_rate", "crit_rate", "warn_hours", "crit_hours", "stuck_minutes")}
        if values["warn_rate"] > values["crit_rate"]:
            raise UsageError(f"--warn-rate {self.warn_rate} is above --crit-rate {self.crit_rate}: "
                             "the warning must come first")
        if values["warn_hours"] < values["crit_hours"]:
            raise UsageError(f"--warn-hours {self.warn_hours} is below --crit-hours {self.crit_hours}: "
                             "the warning must come first (more hours left)")
        if values["stuck_minutes"] <= 0:
            raise UsageError(f"--stuck-minutes must be above 0, not {self.stuck_minutes}")
        return Thresholds(**values)


@dataclass(frozen=True)
class Thresholds:
    warn_rate: float
    crit_rate: float
    warn_hours: float
    crit_hours: float
    stuck_minutes: float


def _number(name: str, text: str) -> float:
    option = "--" + name.replace("_", "-")
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{option} must be a number, not {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{option} must be a finite number >= 0, not {text!r}")
    return value


@dataclass
class Finding:
    """One evaluated fact: its state (0-3), facet, and the line an admin reads."""

    state: int
    facet: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"state": NAMES[self.state], "facet": self.facet, "message": self.message}


@dataclass
class CheckReport:
    """The verdict plus every fact behind it (JSON, perfdata and the Prometheus metrics use these)."""

    state: int = 3
    summary: str = ""
    findings: list[Finding] = field(default_factory=list)
    perfdata: list[str] = field(default_factory=list)
    facets: dict[str, bool] = field(default_factory=dict)  # facet -> could be read
    loops: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    repositories: dict[str, int] = field(default_factory=dict)
    stuck: list[dict[str, Any]] = field(default_factory=list)
    probe: dict[str, Any] | None = None
    stub: dict[str, Any] | None = None
    timestamp: float = 0.0
    duration_seconds: float = 0.0
    check: Any = None  # the evaluated nagiosplugin.Check, for rendering

    @property
    def state_name(self) -> str:
        return NAMES[self.state]

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.state != 0]

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state_name, "exit_code": self.state, "summary": self.summary,
            "findings": [f.to_json() for f in self.findings], "perfdata": self.perfdata,
            "facets": self.facets, "loops": self.loops, "sources": self.sources,
            "repositories": self.repositories, "stuck": self.stuck, "probe": self.probe, "stub": self.stub,
            "timestamp": self.timestamp, "duration_seconds": self.duration_seconds,
        }


# --------------------------------------------------------------------------- nagiosplugin glue


class _Results(nagiosplugin.Results):  # type: ignore[misc]
    """nagiosplugin's container with Nagios' severity order (CRITICAL > UNKNOWN > WARNING > OK)."""

    def __iter__(self) -> Generator[nagiosplugin.Result, None, None]:
        yield from sorted(self.results, key=lambda r: -_SEVERITY[int(r.state)])

    @property
    def most_significant_state(self) -> nagiosplugin.state.ServiceState:
        return max((r.state for r in self.results), key=lambda s: _SEVERITY[int(s)])

    @property
    def first_significant(self) -> nagiosplugin.Result:
        return next(iter(self))


class _Summary(nagiosplugin.Summary):  # type: ignore[misc]
    """OK: every fact in one line. Problem: the worst one (it names the command to run) and a count."""

    def ok(self, results: nagiosplugin.Results) -> str:
        return "; ".join(str(r) for r in results if str(r))

    def problem(self, results: nagiosplugin.Results) -> str:
        problems = [r for r in results if r.state != nagiosplugin.Ok]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{problems[0]}{more}"


class _Described(nagiosplugin.ScalarContext):  # type: ignore[misc]
    """A ScalarContext whose result text is the finding's own message (no '(outside range)' noise)."""

    def __init__(self, name: str, warning: str = "", critical: str = "") -> None:
        super().__init__(name, warning, critical, fmt_metric=_describe)

    def evaluate(self, metric: nagiosplugin.Metric, resource: Any) -> nagiosplugin.Result:
        result = super().evaluate(metric, resource)
        return nagiosplugin.Result(result.state, None, metric)


def _describe(metric: nagiosplugin.Metric, _context: nagiosplugin.Context) -> str:
    return cast(_Facts, metric.resource).text(metric)


class _Facts(nagiosplugin.Resource):  # type: ignore[misc]
    """The gathered numbers as nagiosplugin metrics; `texts` gives each metric its sentence."""

    name = "glcleanup"  # the check takes its name (the status line's first word) from its first resource

    def __init__(self, metrics: list[nagiosplugin.Metric], texts: dict[str, str]) -> None:
        self.metrics, self.texts = metrics, texts

    def probe(self) -> list[nagiosplugin.Metric]:
        return self.metrics

    def text(self, metric: nagiosplugin.Metric) -> str:
        return self.texts.get(metric.name, f"{metric.name} {metric.value}")


# --------------------------------------------------------------------------- facets


def _gitlab_loops(loops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [loop for loop in loops if str(loop.get("user_agent") or "").startswith("GitLab/")]


def failing_rate(loop: dict[str, Any]) -> float:
    """Failing DELETEs per minute: the loop's rate times its share of failures (as GitLab counts them)."""
    requests = int(loop.get("requests") or 0)
    return round(float(loop["per_minute"]) * int(loop.get("failures") or 0) / requests, 1) if requests else 0.0


def _project_of(path: str, rows: list[dict[str, Any]]) -> str:
    """The project owning a registry path when the API listed it, else the path (a root image's project)."""
    for row in rows:
        if row.get("path") == path and row.get("project"):
            return str(row["project"])
    return path


class _Gather:
    """Collects facts facet by facet; failures become UNKNOWN findings with their reason."""

    def __init__(self, settings: Settings, request: CheckRequest, limits: Thresholds) -> None:
        self.settings, self.request, self.limits = settings, request, limits
        self.report = CheckReport(timestamp=time.time())
        self.metrics: list[nagiosplugin.Metric] = []
        self.texts: dict[str, str] = {}
        self.unknown: list[Finding] = []
        self.rows: list[dict[str, Any]] = []

    def metric(self, name: str, value: float, text: str, uom: str | None = None, minimum: float | None = 0,
               context: str | None = None) -> None:
        self.metrics.append(nagiosplugin.Metric(name, value, uom, min=minimum, context=context or name))
        self.texts[name] = text

    def fail(self, facet: str, exc: Exception) -> None:
        self.report.facets[facet] = False
        self.unknown.append(Finding(3, facet, self.settings.redact(f"{facet}: {exc}")))

    def repositories(self) -> None:
        source = self.request.source
        if source == "none" or (source == "api" and not self.settings.url):
            return
        from glcleanup.ops.scan import ScanRequest, scan

        try:
            found = scan(self.settings, ScanRequest(source=source, projects=self.request.projects,
                                                    group=self.request.group), progress=_quiet)
        except GlcleanupError as exc:
            self.fail("repositories", exc)
            return
        self.report.facets["repositories"] = True
        self.rows = found.repositories
        counts = dict.fromkeys(STATUSES, 0)
        for row in self.rows:
            counts[row["status"] if row["status"] in counts else "unknown"] += 1
        self.report.repositories = counts
        self.report.stuck = remember_stuck(self.settings, self.rows, self.report.timestamp,
                                           self.limits.stuck_minutes * 60)
        stuck = self.report.stuck
        minutes = f"{self.limits.stuck_minutes:g}"
        if stuck:
            first = stuck[0]
            text = (f"{len(stuck)} repositories in {'/'.join(LOOPING_STATES)} for over {minutes} min "
                    f"({first['path']}, {first['status']}): run glcleanup scan --project {first['project']}")
        else:
            waiting = sum(counts[state] for state in LOOPING_STATES)
            text = (f"no repository stuck in deletion over {minutes} min"
                    + (f" ({waiting} waiting)" if waiting else ""))
        self.metric("stuck_repositories", len(stuck), text)
        failed = counts[PARKED_STATE]
        first_failed = next((r for r in self.rows if r["status"] == PARKED_STATE), None)
        self.metric("failed_repositories", failed,
                    f"{failed} repositories parked as delete_failed ({first_failed['path']} in "
                    f"{first_failed['project']}): run glcleanup doctor, and re-queue them once the registry "
                    "deletes"
                    if first_failed else "no delete_failed repository")

    def registry_logs(self) -> None:
        if not self.request.registry_logs:
            return
        try:
            host = open_host(self.settings.registry_host or "local", self.settings.ssh_options)
            try:
                evidence = logs.analyze_sources(host, self.request.registry_logs, self.request.since)
            finally:
                host.close()
        except GlcleanupError as exc:
            self.fail("logs", exc)
            return
        self.report.loops, self.report.sources = evidence.loops, evidence.sources
        silent = [s["source"] for s in evidence.sources if not s.get("registry_lines")]
        if silent:
            self.fail("logs", GlcleanupError(f"no registry lines in {', '.join(silent)}: is this the registry's "
                                             "log? (a docker json-file log, Omnibus current, or logrus text)"))
            return
        self.report.facets["logs"] = True
        active = sorted(_gitlab_loops(evidence.active_loops), key=failing_rate, reverse=True)
        if active:
            top = active[0]
            project = _project_of(top["path"], self.rows)
            more = f" and {len(active) - 1} more" if len(active) > 1 else ""
            text = (f"loop on {top['path']}{more} at {failing_rate(top):g} failing DELETE/min from "
                    f"{top['user_agent']}: run glcleanup stop-loop --project {project}")
        else:
            ended = _gitlab_loops(evidence.loops)
            text = "no active DELETE loop" + (
                f" (one on {ended[0]['path']} ended {_ago(ended[0]['age_seconds'])} ago)" if ended else "")
        self.metric("delete_rate", failing_rate(active[0]) if active else 0.0, text)
        hours = [s for s in evidence.sources if s.get("hours_to_full") is not None]
        if hours:
            soonest = min(hours, key=lambda s: s["hours_to_full"])
            left = float(soonest["hours_to_full"])
            action = (f": stop the loop, then glcleanup logs {soonest['source']} --truncate"
                      if left < self.limits.warn_hours else "")
            self.metric("hours_to_full", left, f"disk of {soonest['source']} full in ~{left:g} h at "
                        f"{soonest['growth_bytes_per_hour'] / 1e6:.1f} MB/h{action}", minimum=None)

    def probe(self) -> None:
        if not (self.request.probe and self.settings.registry_url):
            return
        from glcleanup.ops import probe as registry

        try:
            answer = registry.probe(self.settings.registry_url, self.settings.registry_verify)
        except GlcleanupError as exc:
            self.fail("probe", exc)
            return
        self.report.facets["probe"] = True
        self.report.probe = {k: answer.get(k) for k in ("url", "loop_risk", "explanation")}
        risk = bool(answer.get("loop_risk"))
        self.metric("loop_risk", int(risk),
                    f"registry {answer.get('url')} would loop GitLab's deletes: run glcleanup doctor"
                    if risk else "registry answers GitLab's tag delete")

    def stub(self) -> None:
        if not self.request.stub_dir:
            return
        from glcleanup.stub.status import read_status

        try:
            host = open_host(self.settings.registry_host or "local", self.settings.ssh_options)
            try:
                status = read_status(host, self.request.stub_dir).to_json()
            finally:
                host.close()
        except GlcleanupError as exc:
            self.fail("stub", exc)
            return
        self.report.facets["stub"] = True
        until = _epoch(status.get("until"))
        overdue = status["state"] == "on" and until is not None and until < self.report.timestamp
        self.report.stub = {"state": status["state"], "mode": status.get("mode"), "since": status.get("since"),
                            "until": status.get("until"), "overdue": overdue}
        if status["state"] != "on":
            text = "no glcleanup stub on"
        elif overdue:
            text = (f"glcleanup stub ({status.get('mode')}) still on past its planned end {status.get('until')}: "
                    f"run glcleanup stub off --dir {self.request.stub_dir}")
        else:
            text = f"glcleanup stub ({status.get('mode')}) on since {status.get('since')}"
        self.metric("stub_overdue", int(overdue), text)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "a while"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    """A progress sink that drops everything: a monitoring check writes nothing but its verdict."""


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_ORDER = ("delete_rate", "hours_to_full", "stuck_repositories", "failed_repositories", "loop_risk", "stub_overdue")


def _contexts(limits: Thresholds) -> list[nagiosplugin.Context]:
    """Threshold ranges in Nagios syntax: `N` alerts above N, `N:` below N."""
    return [
        _Described("delete_rate", f"{limits.warn_rate:g}", f"{limits.crit_rate:g}"),
        _Described("hours_to_full", f"{limits.warn_hours:g}:", f"{limits.crit_hours:g}:"),
        _Described("stuck_repositories", "0"),
        _Described("failed_repositories", "0"),
        _Described("loop_risk", "0"),
        _Described("stub_overdue", "0"),
    ]


def evaluate(gathered: _Gather, limits: Thresholds) -> CheckReport:
    """Run nagiosplugin over the gathered metrics; add the UNKNOWN facets; fill the report."""
    report = gathered.report
    order = list(_ORDER)
    gathered.metrics.sort(key=lambda m: order.index(m.name) if m.name in order else len(order))
    np_check = nagiosplugin.Check(_Facts(gathered.metrics, gathered.texts), *_contexts(limits), _Summary(),
                                  _Results())
    np_check()
    for finding in gathered.unknown:
        np_check.results.add(nagiosplugin.Result(nagiosplugin.Unknown, finding.message))
    if not np_check.results:
        np_check.results.add(nagiosplugin.Result(
            nagiosplugin.Unknown, "nothing to check: give --registry-log, --url (GITLAB_URL), --registry-url "
                                  "or --stub-dir"))
    report.check = np_check
    _refresh(report, gathered.unknown)
    return report


def add_unknown(report: CheckReport, facet: str, message: str) -> None:
    """A failure after the evaluation (e.g. the metrics file): one more UNKNOWN result, verdict redone."""
    finding = Finding(3, facet, message)
    report.check.results.add(nagiosplugin.Result(nagiosplugin.Unknown, message))
    _refresh(report, [finding])


def _refresh(report: CheckReport, unknown: list[Finding]) -> None:
    np_check = report.check
    known = {f.message: f.facet for f in report.findings}
    known.update({f.message: f.facet for f in unknown})
    report.findings = []
    report.state = int(np_check.state)
    report.summary = np_check.summary_str
    report.perfdata = list(np_check.perfdata)
    facet_of = {"delete_rate": "logs", "hours_to_full": "logs", "stuck_repositories": "repositories",
                "failed_repositories": "repositories", "loop_risk": "probe", "stub_overdue": "stub"}
    for result in np_check.results:
        name = result.metric.name if result.metric else ""
        facet = facet_of.get(name) or known.get(str(result.hint), "check")
        report.findings.append(Finding(int(result.state), facet, str(result)))


def run_check(settings: Settings, request: CheckRequest) -> CheckReport:
    """Gather every configured facet and evaluate them (UsageError for nonsensical thresholds)."""
    began = time.monotonic()
    limits = request.validated()
    gathered = _Gather(settings, request, limits)
    gathered.repositories()  # first: it tells the log facet which project owns a looping path
    gathered.registry_logs()
    gathered.probe()
    gathered.stub()
    report = evaluate(gathered, limits)
    report.duration_seconds = round(time.monotonic() - began, 3)
    return report


# --------------------------------------------------------------------------- first-seen memory


def _memory_path(settings: Settings) -> Path:
    key = hashlib.sha256(f"{settings.url}|{settings.rails_host}".encode()).hexdigest()[:16]
    return state_dir() / "check" / f"seen-{key}.json"


def remember_stuck(settings: Settings, rows: list[dict[str, Any]], now: float,
                   threshold: float) -> list[dict[str, Any]]:
    """Rows in a looping state that this check first saw at least `threshold` seconds ago.

    The memory (id -> first seen in that state) lives in the state dir; a row that leaves the
    looping states is forgotten. If the memory cannot be written the check still answers (rows are
    then new on every run, so never stuck: said in the README).
    """
    path = _memory_path(settings)
    try:
        seen = json.loads(path.read_text())
        if not isinstance(seen, dict):
            seen = {}
    except (OSError, ValueError):
        seen = {}
    current: dict[str, dict[str, Any]] = {}
    stuck = []
    for row in rows:
        if row["status"] not in LOOPING_STATES:
            continue
        key = str(row["id"])
        old = seen.get(key)
        since = float(old["since"]) if isinstance(old, dict) and isinstance(old.get("since"), int | float) else now
        current[key] = {"since": since, "path": row.get("path")}
        if now - since >= threshold:
            stuck.append({"id": row["id"], "path": row.get("path"), "project": row.get("project"),
                          "status": row["status"], "first_seen": datetime.fromtimestamp(since, UTC).isoformat(),
                          "minutes": round((now - since) / 60, 1)})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(current))
        os.replace(temp, path)
    except OSError:
        pass
    return sorted(stuck, key=lambda s: -s["minutes"])


__all__ = ["NAMES", "CheckReport", "CheckRequest", "Finding", "Thresholds", "add_unknown", "failing_rate",
           "run_check"]
