"""`glcleanup stub on|off|status`: parse options, ask for the go-ahead, render. Logic is in glcleanup.stub.deploy."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from glcleanup.cli.options import command, json_mode
from glcleanup.cli.output import confirm, emit_json, info
from glcleanup.durations import parse_duration
from glcleanup.errors import ExitCode, UsageError
from glcleanup.settings import Settings
from glcleanup.stub.deploy import OffResult, OnResult, read_status, stub_off, stub_on
from glcleanup.stub.render import DEFAULT_DIR, build_config, safe_path
from glcleanup.transport import Host, open_host

stub_app = typer.Typer(name="stub", no_args_is_help=True,
                       help="Last resort: a registry stand-in (respond) or a probe-fixing proxy, and back.")

DirOpt = Annotated[str, typer.Option("--dir", help="State, config and logs on the registry host.")]
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


@command(stub_app, "on")
def on_command(
    settings: Settings,
    mode: Annotated[str, typer.Option("--mode", help="respond (answer as GitLab needs) or proxy.")] = "respond",
    upstream: Annotated[str | None, typer.Option("--upstream", help="proxy: the real registry's URL.")] = None,
    deploy: Annotated[str, typer.Option("--deploy", help="nginx (host binary) or compose.")] = "nginx",
    listen: Annotated[str | None, typer.Option(
        "--listen", help="ADDR:PORT to bind (default all addresses, port of --registry-url or 443).")] = None,
    http_port: Annotated[str, typer.Option("--http-port", help="Plain-HTTP port redirecting to TLS, or none.")]
    = "none",
    cert: Annotated[str | None, typer.Option("--cert", help="The registry's certificate (on its host).")] = None,
    key: Annotated[str | None, typer.Option("--key", help="The registry's private key (on its host).")] = None,
    directory: DirOpt = DEFAULT_DIR,
    stop_registry: Annotated[str | None, typer.Option(
        "--stop-registry", help="Command that frees the port (split like a shell, run as argv; no pipes).")]
    = None,
    start_registry: Annotated[str | None, typer.Option(
        "--start-registry", help="Command that brings the registry back (run by off, rollback, watcher).")]
    = None,
    for_duration: Annotated[str | None, typer.Option("--for", help="Switch off by itself after this (30m, 2h).")]
    = None,
    quiet_minutes: Annotated[float | None, typer.Option(
        "--quiet-minutes", help="Switch off after this many minutes without a DELETE.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="compose: nginx image (default nginx:1.26).")]
    = None,
    yes: YesOpt = False,
) -> int:
    """Put the stub up where the registry listens: checks first, rollback on any failure."""
    config = build_config(
        mode=mode, listen=listen, http_port=http_port, cert=cert, key=key, upstream=upstream, deploy=deploy,
        dir=directory, stop_registry=stop_registry, start_registry=start_registry,
        for_duration=parse_duration(for_duration) if for_duration else None, quiet_minutes=quiet_minutes,
        registry_url=settings.registry_url, image=image)
    host = _host(settings)
    try:
        planned = stub_on(host, config, apply=False, registry_url=settings.registry_url)
        for warning in planned.warnings:
            info(f"warning: {warning}")
        result = planned
        if not planned.already and _go_ahead(yes, planned.plan, settings):
            result = stub_on(host, config, apply=True, registry_url=settings.registry_url, say=info)
    finally:
        host.close()
    _render_on(result, settings)
    return int(ExitCode.OK)


def _render_on(result: OnResult, settings: Settings) -> None:
    if json_mode(settings):
        emit_json(result.to_json())
        return
    if result.already:
        typer.echo(f"stub already on in {result.config.dir}; nothing changed")
        return
    if not result.applied:
        return
    for line in result.verified:
        info(f"  ok  {line}")
    status = result.status or {}
    typer.echo(f"stub on: {status.get('mode')} on {status.get('listen')} since {status.get('since')}"
               + (f" until {status.get('until')}" if status.get("until") not in (None, "-") else "")
               + f" (logs: {result.config.dir}/access.log)")


@command(stub_app, "off")
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
        typer.echo("stub already off" + (f" (ended: {last.get('reason')} at {last.get('at')})" if last else ""))
    elif result.applied:
        if result.registry_ok is None:
            typer.echo("stub off (registry not checked: no --registry-url and no --start-registry recorded)")
        else:
            typer.echo("stub off: registry restored" if not trouble else "stub off, but the registry does not answer")
        if result.registry_detail:
            info(f"registry: {result.registry_detail}")
    return int(ExitCode.TROUBLE if trouble else ExitCode.OK)


@command(stub_app, "status")
def status_command(settings: Settings, directory: DirOpt = DEFAULT_DIR) -> int:
    """Is the stub on, since when, how many requests, and the last DELETE it answered."""
    path = safe_path(directory, "--dir")
    host = _host(settings)
    try:
        doc = read_status(host, path).to_json()
    finally:
        host.close()
    if json_mode(settings):
        emit_json(doc)
    else:
        _render_status(doc)
    return int(ExitCode.OK)


def _render_status(doc: dict[str, Any]) -> None:
    if doc["state"] == "off":
        last = doc.get("last_off")
        typer.echo("stub: off" + (f" (last ended: {last['reason']} at {last['at']})" if last else ""))
        if doc.get("stale"):
            typer.echo(f"warning: {doc['dir']}/state.json is left from a stub that is not running: "
                       "run `stub off --yes` to restore what it recorded")
        return
    typer.echo(f"stub: on ({doc['mode']}, {doc['deploy']}) on {doc['listen']} since {doc['since']}")
    if doc.get("until") not in (None, "-"):
        typer.echo(f"until: {doc['until']}")
    if doc.get("quiet_minutes"):
        typer.echo(f"off after {doc['quiet_minutes']:g} minutes without a DELETE")
    typer.echo(f"requests answered: {doc['requests']}, DELETEs: {doc['deletes']}")
    last = doc.get("last_delete")
    if last:
        typer.echo(f"last DELETE: {last['time']} {last['path']} -> {last['status']} ({last['user_agent']})")


def register(app: typer.Typer) -> None:
    app.add_typer(stub_app, name="stub")
