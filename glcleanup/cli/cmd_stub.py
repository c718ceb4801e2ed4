"""`glcleanup stub on|off|status`: parse options, ask for the go-ahead, render. Logic is in glcleanup.stub.deploy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from glcleanup.cli.options import RAILS, REGISTRY_HOST, REGISTRY_URL, command, json_mode
from glcleanup.cli.output import confirm, emit_json, emit_table, info, say
from glcleanup.durations import parse_duration
from glcleanup.errors import ExitCode, UsageError
from glcleanup.ops.pending import (
    RetryNow,
    latest_retry_epoch,
    pending_for_stub,
    retry_now,
    waiting_in_backoff,
)
from glcleanup.settings import Settings
from glcleanup.stub.deploy import OffResult, OnResult, read_status, stub_off, stub_on
from glcleanup.stub.render import DEFAULT_DIR, build_config, safe_path
from glcleanup.stub.status import iso
from glcleanup.transport import Host, open_host

stub_app = typer.Typer(name="stub", no_args_is_help=True,
                       short_help="Last resort: a registry stand-in or a probe-fixing proxy.",
                       help="Last resort: a registry stand-in (respond) or a probe-fixing proxy, and back.")

DirOpt = Annotated[str, typer.Option("--dir", metavar="DIR", help="State, config and logs on the registry host.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Apply (otherwise the plan is shown; a terminal asks).")]


def _host(settings: Settings) -> Host:
    if not settings.registry_host:
        raise UsageError("--registry-host is required (local, or [ssh://][user@]host[:port])")
    return open_host(settings.registry_host, settings.ssh_options)


def _go_ahead(yes: bool, plan: list[str], settings: Settings) -> bool:
    """--yes, or an interactive yes when both ends are a terminal; never a silent default."""
    if yes:
        return True
    if not plan:
        return False
    if settings.output != "json":
        info("plan:")
        for step in plan:
            info(f"  - {step}")
    return confirm("apply this plan?", yes=False, json_mode=json_mode(settings))


@command(stub_app, "on", uses=(*REGISTRY_HOST, *REGISTRY_URL, *RAILS),
         short_help="Put the stub up (checks first, rolls back).")
def on_command(
    settings: Settings,
    mode: Annotated[str, typer.Option("--mode", metavar="respond|proxy",
        help="respond (answer as GitLab needs) or proxy.")] = "respond",
    upstream: Annotated[str | None, typer.Option("--upstream", metavar="URL",
        help="proxy: the real registry's URL.")] = None,
    deploy: Annotated[str, typer.Option("--deploy", metavar="nginx|compose",
        help="nginx (host binary) or compose.")] = "nginx",
    listen: Annotated[str | None, typer.Option(
        "--listen", metavar="ADDR:PORT",
        help="ADDR:PORT to bind (default all addresses, port of --registry-url or 443).")] = None,
    http_port: Annotated[str, typer.Option("--http-port", metavar="PORT|none",
        help="Plain-HTTP port redirecting to TLS, or none.")]
    = "none",
    cert: Annotated[str | None, typer.Option("--cert", metavar="FILE",
        help="The registry's certificate (on its host).")] = None,
    key: Annotated[str | None, typer.Option("--key", metavar="FILE",
        help="The registry's private key (on its host).")] = None,
    directory: DirOpt = DEFAULT_DIR,
    stop_registry: Annotated[str | None, typer.Option(
        "--stop-registry", metavar="CMD",
        help="Command that frees the port (split like a shell, run as argv; no pipes).")]
    = None,
    start_registry: Annotated[str | None, typer.Option(
        "--start-registry", metavar="CMD",
        help="Command that brings the registry back (run by off, rollback, watcher).")]
    = None,
    for_duration: Annotated[str | None, typer.Option("--for", metavar="DURATION",
        help="Switch off by itself after this (30m, 2h).")]
    = None,
    quiet_minutes: Annotated[float | None, typer.Option(
        "--quiet-minutes", metavar="MINUTES", help="Switch off after this many minutes without a DELETE.")] = None,
    image: Annotated[str | None, typer.Option("--image", metavar="IMAGE",
        help="compose: nginx image (default nginx:1.26).")]
    = None,
    requeue: Annotated[bool, typer.Option(
        "--requeue", help="Once the stub is verified, retry now the rows GitLab holds in its backoff "
                          "(needs --rails-host and --registry-url; journaled like `glcleanup requeue`).")] = False,
    yes: YesOpt = False,
) -> int:
    """Put the stub up where the registry listens: checks first, rollback on any failure."""
    if requeue and not (settings.rails_host and settings.registry_url):
        raise UsageError("--requeue needs --rails-host (to read and requeue GitLab's rows) and --registry-url "
                         "(requeue replays GitLab's probe through the stub first)")
    config = build_config(
        mode=mode, listen=listen, http_port=http_port, cert=cert, key=key, upstream=upstream, deploy=deploy,
        dir=directory, stop_registry=stop_registry, start_registry=start_registry,
        for_duration=parse_duration(for_duration) if for_duration else None, quiet_minutes=quiet_minutes,
        registry_url=settings.registry_url, image=image)
    host = _host(settings)
    retried: RetryNow | None = None
    try:
        planned = stub_on(host, config, apply=False, registry_url=settings.registry_url)
        for warning in [] if planned.already else planned.warnings:  # on twice: the one line below says it
            info(f"warning: {warning}")
        result = planned
        # one read-only boot before the plan: the rows GitLab will still retry through this registry, and when
        gitlab, trouble = (None, None) if planned.already else pending_for_stub(settings, required=requeue)
        if trouble:
            info(f"warning: {trouble}")
        targets = waiting_in_backoff(gitlab) if gitlab and requeue else {}
        if gitlab and not json_mode(settings):
            _render_pending(gitlab)
        not_before = latest_retry_epoch(gitlab) if config.quiet_seconds else None
        plan = [*planned.plan, *_retry_steps(targets, not_before)]
        if not planned.already and _go_ahead(yes, plan, settings):
            if not_before and not targets:
                info(f"GitLab retries a deletion at {iso_time(not_before)}: --quiet-minutes counts from then")
            result = stub_on(host, config, apply=True, registry_url=settings.registry_url, say=info,
                             not_before=not_before)
            if targets:
                info(f"requeueing {sum(map(len, targets.values()))} waiting repositories through the stub")
                retried = retry_now(settings, host, config.dir, targets, quiet=bool(config.quiet_seconds))
        result.plan = plan
    finally:
        host.close()
    _render_on(result, settings, gitlab, retried)
    return int(ExitCode.OK if retried is None or retried.ok else ExitCode.TROUBLE)


def iso_time(epoch: int | None) -> str | None:
    return iso(datetime.fromtimestamp(epoch, UTC)) if epoch else None


def _retry_steps(targets: dict[str, list[int]], not_before: int | None) -> list[str]:
    steps = [f"requeue {project} repositories {', '.join(map(str, ids))} (GitLab retries them now, through the "
             "stub; journaled, `glcleanup undo` puts them back)" for project, ids in targets.items()]
    if not_before and not targets:
        steps.append(f"--quiet-minutes counts from GitLab's latest pending retry ({iso_time(not_before)}), "
                     "not before")
    return steps


def _render_on(result: OnResult, settings: Settings, gitlab: dict[str, Any] | None = None,
               retried: RetryNow | None = None) -> None:
    if json_mode(settings):
        emit_json({**result.to_json(), **({"gitlab": gitlab} if gitlab is not None else {}),
                   **({"requeued": retried.to_json(), "held_until": iso_time(retried.held_until)} if retried else {})})
        return
    if result.already:
        say(f"stub already on in {result.config.dir}; nothing changed")
        return
    if not result.applied:
        return
    for line in result.verified:
        info(f"  ok  {line}")
    status = result.status or {}
    say(f"stub on: {status.get('mode')} on {status.get('listen')} since {status.get('since')}"
               + (f" until {status.get('until')}" if status.get("until") not in (None, "-") else "")
               + f" (logs: {result.config.dir}/access.log)")
    if retried:
        _render_retried(retried)


def _render_retried(retried: RetryNow) -> None:
    for report in retried.reports:
        doc = report.to_json()
        if report.refused:
            info(f"{doc['project'] or 'requeue'}: {report.refused}")
            continue
        ids = ", ".join(str(row["id"]) for row in doc["plan"]) or "none"
        say(f"requeued {doc['project']}: {ids}" + (f"; journal: {doc['journal']} (undo with: glcleanup undo "
                                                    f"{doc['journal']})" if doc["journal"] else ""))
    for project, why in retried.errors.items():
        info(f"requeue of {project} failed, its rows stay as they were: {why}")
    if retried.held_until:
        info(f"--quiet-minutes now counts from {iso_time(retried.held_until)} (GitLab's cron picks requeued rows "
             "within 5 minutes)")


@command(stub_app, "off", uses=(*REGISTRY_HOST, *REGISTRY_URL), short_help="Take it down, restore the registry.")
def off_command(settings: Settings, directory: DirOpt = DEFAULT_DIR, yes: YesOpt = False) -> int:
    """Stop the stub and restore exactly what `on` recorded (off twice is fine)."""
    path = safe_path(directory, "--dir")
    host = _host(settings)
    try:
        result = stub_off(host, path, apply=False, registry_url=settings.registry_url)
        if not result.already_off and _go_ahead(yes, result.plan, settings):
            result = stub_off(host, path, apply=True, registry_url=settings.registry_url, say=info)
    finally:
        host.close()
    return _render_off(result, settings)


def _render_off(result: OffResult, settings: Settings) -> int:
    trouble = result.registry_ok is False
    if json_mode(settings):
        emit_json(result.to_json())
    elif result.already_off:
        last = result.last_off or {}
        say("stub already off" + (f" (ended: {last.get('reason')} at {last.get('at')})" if last else ""))
    elif result.applied:
        if result.registry_ok is None:
            say("stub off (registry not checked: no --registry-url and no --start-registry recorded)")
        else:
            say("stub off: registry restored" if not trouble else "stub off, but the registry does not answer")
        if result.registry_detail:
            info(f"registry: {result.registry_detail}")
    return int(ExitCode.TROUBLE if trouble else ExitCode.OK)


@command(stub_app, "status", uses=REGISTRY_HOST, short_help="On or off, since when, last DELETE.")
def status_command(settings: Settings, directory: DirOpt = DEFAULT_DIR) -> int:
    """Is the stub on, since when, how many requests, and the last DELETE it answered."""
    path = safe_path(directory, "--dir")
    host = _host(settings)
    try:
        doc = read_status(host, path).to_json()
    finally:
        host.close()
    gitlab, trouble = pending_for_stub(settings, required=False)  # one read-only boot, with --rails-host
    if gitlab is not None:
        doc["gitlab"] = gitlab
    if trouble:
        doc["warnings"] = [trouble]
        info(f"warning: {trouble}")
    if json_mode(settings):
        emit_json(doc)
    else:
        _render_status(doc)
        if "gitlab" in doc:
            _render_pending(doc["gitlab"])
    return int(ExitCode.OK)


def _render_pending(gitlab: dict[str, Any]) -> None:
    rows = gitlab.get("pending", [])
    emit_table(rows, ["id", "path", "status", "failed_deletion_count", "next_delete_attempt_at"],
               title=f"\nGitLab {gitlab.get('gitlab_version')}: repositories still to be deleted "
                     "(each retry goes to the registry):", empty="(none)")
    if gitlab.get("latest_retry_at"):
        info(f"latest pending retry at {gitlab['latest_retry_at']}: switching the stub off before then sends that "
             "retry to the real registry (`glcleanup requeue` retries now)")
    if gitlab.get("parked"):
        info(f"{gitlab['parked']} parked (delete_failed) repositories are not retried; `glcleanup requeue` "
             "puts them back")


def _render_status(doc: dict[str, Any]) -> None:
    if doc["state"] == "off":
        last = doc.get("last_off")
        say("stub: off" + (f" (last ended: {last['reason']} at {last['at']})" if last else ""))
        if doc.get("stale"):
            say(f"warning: {doc['dir']}/state.json is left from a stub that is not running: "
                       "run `stub off --yes` to restore what it recorded")
        return
    say(f"stub: on ({doc['mode']}, {doc['deploy']}) on {doc['listen']} since {doc['since']}")
    if doc.get("until") not in (None, "-"):
        say(f"until: {doc['until']}")
    if doc.get("quiet_minutes"):
        say(f"off after {doc['quiet_minutes']:g} minutes without a DELETE")
    say(f"requests answered: {doc['requests']}, DELETEs: {doc['deletes']}")
    last = doc.get("last_delete")
    if last:
        say(f"last DELETE: {last['time']} {last['path']} -> {last['status']} ({last['user_agent']})")


def register(app: typer.Typer) -> None:
    app.add_typer(stub_app, name="stub")
