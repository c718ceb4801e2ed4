"""`glcleanup doctor`: connection checks and GitLab's probe replayed against the registry."""

from __future__ import annotations

import typer

from glcleanup.cli.options import command, json_mode
from glcleanup.cli.output import emit, emit_table, say
from glcleanup.errors import ExitCode
from glcleanup.gitlab_facts import RETRY_CAP_FLAG, RetryCap
from glcleanup.ops.doctor import DoctorReport, diagnose
from glcleanup.settings import Settings


def doctor_command(settings: Settings) -> int:
    """Check every configured connection and whether GitLab would loop on this registry (exit 1 if not ok)."""
    report = diagnose(settings)
    emit(json_mode(settings), report.to_json(), lambda: render(report))
    return int(ExitCode.TROUBLE if report.failed else ExitCode.OK)


def render(report: DoctorReport) -> None:
    rows = [{"check": c["name"], "ok": "skip" if c.get("skipped") else ("ok" if c["ok"] else "FAIL"),
             "detail": c["detail"]} for c in report.checks]
    emit_table(rows, ["check", "ok", "detail"])
    reg = report.registry
    if reg.get("tag_delete_probe"):
        probe, delete = reg["tag_delete_probe"], reg["tag_delete"]
        say(f"\nProbe replay on {reg['url']}:")
        say(f"  {probe['request']} -> {probe['status']} Allow: {probe['allow'] or '-'}")
        say(f"  {delete['request']} -> {delete['status']} {delete['error_code'] or ''}")
        say(f"  loop risk: {'YES' if reg['loop_risk'] else 'no'}: {reg['explanation']}")
        cap = {RetryCap.NATIVE: "caps deletion retries (a failing deletion ends as delete_failed)",
               RetryCap.FEATURE_FLAG: f"caps deletion retries (the {RETRY_CAP_FLAG} flag is on)",
               RetryCap.NONE: "has no retry cap: a failing deletion retries forever",
               RetryCap.UNKNOWN: f"caps retries only with the {RETRY_CAP_FLAG} flag (state unknown without "
                                 "--rails-host)"}.get(reg.get("retry_cap", ""))
        if cap:
            say(f"  GitLab {reg['gitlab_version']} {cap}")
        for number, fix in enumerate(reg.get("fixes", []), 1):
            say(f"  fix {number}: {fix}")
        ways = reg.get("way_out") or {}
        if ways:
            say(f"  way out for a row still queued: {ways.get('queued') or '-'}; "
                f"for a parked (delete_failed) row: {ways.get('parked') or '-'} "
                "(`glcleanup scan` names it per row)")


def register(app: typer.Typer) -> None:
    command(app, "doctor", short_help="Check every connection; replay GitLab's delete probe.")(doctor_command)
