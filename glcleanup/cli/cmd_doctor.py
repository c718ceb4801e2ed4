"""`glcleanup doctor`: connection checks and GitLab's probe replayed against the registry."""

from __future__ import annotations

import typer

from glcleanup.cli.options import command, json_mode
from glcleanup.cli.output import emit_json, emit_table
from glcleanup.errors import ExitCode
from glcleanup.gitlab_facts import RETRY_CAP_FLAG, RetryCap
from glcleanup.ops.doctor import DoctorReport, diagnose
from glcleanup.settings import Settings


def doctor_command(settings: Settings) -> int:
    """Check every configured connection and whether GitLab would loop on this registry (exit 1 if not ok)."""
    report = diagnose(settings)
    if json_mode(settings):
        emit_json(report.to_json())
    else:
        render(report)
    return int(ExitCode.TROUBLE if report.failed else ExitCode.OK)


def render(report: DoctorReport) -> None:
    rows = [{"check": c["name"], "ok": "skip" if c.get("skipped") else ("ok" if c["ok"] else "FAIL"),
             "detail": c["detail"]} for c in report.checks]
    emit_table(rows, ["check", "ok", "detail"])
    reg = report.registry
    if reg.get("tag_delete_probe"):
        probe, delete = reg["tag_delete_probe"], reg["tag_delete"]
        typer.echo(f"\nProbe replay on {reg['url']}:")
        typer.echo(f"  {probe['request']} -> {probe['status']} Allow: {probe['allow'] or '-'}")
        typer.echo(f"  {delete['request']} -> {delete['status']} {delete['error_code'] or ''}")
        typer.echo(f"  loop risk: {'YES' if reg['loop_risk'] else 'no'}: {reg['explanation']}")
        cap = {RetryCap.NATIVE: "caps deletion retries (a failing deletion ends as delete_failed)",
               RetryCap.FEATURE_FLAG: f"caps deletion retries (the {RETRY_CAP_FLAG} flag is on)",
               RetryCap.NONE: "has no retry cap: a failing deletion retries forever",
               RetryCap.UNKNOWN: f"caps retries only with the {RETRY_CAP_FLAG} flag (state unknown without "
                                 "--rails-host)"}.get(reg.get("retry_cap", ""))
        if cap:
            typer.echo(f"  GitLab {reg['gitlab_version']} {cap}")
        for number, fix in enumerate(reg.get("fixes", []), 1):
            typer.echo(f"  fix {number}: {fix}")


def register(app: typer.Typer) -> None:
    command(app, "doctor")(doctor_command)
