"""`stub on|off|status`: put a registry stand-in (or a probe-fixing proxy) up, verify it, take it down.

Safety shape (design.md §7.6): every check runs before anything stops; `on` records in --dir what
it replaced and how to restore it, and from that moment any failure rolls back by itself. A
watcher process on the registry host is started *before* the registry is stopped and acts as a
dead-man's switch: unless glcleanup confirms a verified stub within the guard period (a dropped
SSH link, a killed laptop) it runs the same restore as `stub off`. The same watcher later ends the
stub after `--for` or after `--quiet-minutes` without a DELETE.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from glcleanup import __version__
from glcleanup.errors import ConnectError, GlcleanupError, Interrupted, StubctlExit, StubError
from glcleanup.stub.control import deploy_word, quote_argv, sh_check, stubctl, tail_text
from glcleanup.stub.preflight import (
    busy_ports,
    check_cert_key,
    check_dir,
    compose_command,
    missing_tools,
    wait_ports_free,
)
from glcleanup.stub.render import NO_TLS_PLACEHOLDERS, Listen, StubConfig, render_env, render_nginx, stub_file
from glcleanup.stub.status import StubStatus, iso, parse_access_line, read_status
from glcleanup.stub.trust import check_owner, check_state
from glcleanup.stub.verify import probes_for, registry_answers, verify
from glcleanup.transport import Host

GUARD_SECONDS = 240.0        # longer than a slow stop + port wait + start + verify
COMMAND_TIMEOUT = 90.0       # the admin's stop/start commands (docker stop waits 10 s by default)
PORT_WAIT = 20.0             # how long the port may take to close after --stop-registry
STATE_VERSION = 1
Say = Callable[[str], None]

# The watcher outlives this connection: nohup against SIGHUP, and its own session (setsid, where present)
# so a Ctrl-C in the admin's terminal (with --registry-host local) cannot reach it.
_LAUNCH_WATCHER = ('d=$1; shift; s=; command -v setsid >/dev/null 2>&1 && s=setsid; '
                   'nohup $s sh "$d/stubctl.sh" watch "$d" "$@" </dev/null >/dev/null 2>&1 & echo $!')
_ROTATE = ('d=$1; for f in access.log deletes.log activity.log error.log watcher.log; do '
           '[ -f "$d/$f" ] && mv -f "$d/$f" "$d/$f.prev"; done; '
           'rm -f "$d/confirmed" "$d/restore-failed" "$d/nginx.pid"; mkdir -p "$d/tmp"')
_MKDIR = 'umask 077; mkdir -p "$1" && chmod 711 "$1"'    # nginx workers may need to reach DIR/tmp
_REMOVE_WRITTEN = 'd=$1; shift; for f in "$@" error.log; do rm -f "$d/$f"; done; rm -rf "$d/tmp"; exit 0'
_REMOVE_CREATED = 'rm -rf "$1"'     # only a --dir this run created (checked absent just before)


def _quiet(_: str) -> None:
    return None


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --- on ------------------------------------------------------------------------------------------------

@dataclass
class OnResult:
    """What `stub on` planned or did; `to_json` is the CLI's JSON document."""

    config: StubConfig
    plan: list[str]
    applied: bool = False
    already: bool = False
    warnings: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    status: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan, "applied": self.applied, "already_on": self.already,
                "verified": self.verified, "warnings": self.warnings, "status": self.status}


def plan_on(config: StubConfig, compose_cmd: str | None = None) -> list[str]:
    """The steps `stub on --yes` takes, in order, for the admin to read first."""
    d = config.dir
    steps = [f"check on the host: {d} writable, tools present, "
             + ("certificate and key match, " if config.tls else "")
             + f"{config.listen} free (after --stop-registry), nginx config valid",
             f"write {d}/nginx.conf ({config.mode} mode), {d}/stubctl.sh and {d}/state.json "
             "(what is replaced and how to restore it)",
             "start a guard on the host: restores by itself unless this run confirms a verified stub"]
    if config.stop_registry:
        steps.append(f"stop the registry: {quote_argv(config.stop_registry)}")
    what = (f"nginx -p {d}/ -c {d}/nginx.conf" if config.deploy == "nginx"
            else f"{compose_cmd or 'docker compose'} -f {d}/docker-compose.yml up -d")
    steps.append(f"start the stub on {config.scheme}://{config.listen}"
                 + (f" (+ http :{config.http_port} -> https)" if config.http_port else "") + f": {what}")
    steps.append("verify every promised answer with curl on the registry host"
                 + (f" (proxy to {config.upstream})" if config.upstream else ""))
    if config.for_seconds:
        steps.append(f"switch off by itself after {timedelta(seconds=config.for_seconds)}")
    if config.quiet_seconds:
        steps.append(f"switch off by itself after {config.quiet_seconds / 60:g} minutes without deletion "
                     "traffic (DELETE or tags/list)")
    if config.mode == "respond":
        steps.append("while it is up: every repository GitLab is deleting is recorded as deleted while its data "
                     "stays in the registry (run its garbage collection later); pushes and pulls fail")
    else:
        steps.append("while it is up: GitLab's deletes go by digest and really happen (needs "
                     "storage.delete.enabled); pushes and pulls pass through")
    steps.append("on any failure: stop the stub, run --start-registry "
                 f"({quote_argv(config.start_registry)}), remove the state")
    return steps


_DAEMON_DOWN = ("Cannot connect to the Docker daemon", "Error while fetching server API version",
                "Is the docker daemon running", "docker.sock")


def docker_daemon_problem(host: Host) -> str | None:
    """None when `docker` reaches its daemon (or cannot tell); else the client's one-line reason.

    Compose validates files without a daemon and only fails at `up`, where docker-compose v1 prints a
    Python traceback; asking first turns that into one clear line before anything changes.
    """
    result = host.run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=30)
    if result.exit_code == 0:
        return None
    text = f"{result.error_text}\n{result.text}"
    for line in text.splitlines():
        if any(marker in line for marker in _DAEMON_DOWN):
            return line.strip()[:200]
    return None


def preflight(host: Host, config: StubConfig) -> tuple[list[str], str | None, bool]:
    """Read-only checks before anything changes: (warnings, compose command, dir exists)."""
    warnings: list[str] = []
    tools = ["curl"] + (["openssl"] if config.tls else []) + (["nginx"] if config.deploy == "nginx" else [])
    missing = missing_tools(host, tools)
    if missing:
        raise StubError(f"missing on {host.name}: {', '.join(missing)} (needed for --deploy {config.deploy})")
    compose_cmd = None
    if config.deploy == "compose":
        compose_cmd = compose_command(host)
        if compose_cmd is None:
            raise StubError(f"--deploy compose: neither `docker compose` nor `docker-compose` works on {host.name}")
        unreachable = docker_daemon_problem(host)
        if unreachable:
            raise StubError(f"--deploy compose: no Docker daemon reachable on {host.name} ({unreachable}); "
                            "start Docker, or use --deploy nginx")
    exists = check_dir(host, config.dir)
    if config.cert and config.key:
        warnings += check_cert_key(host, config.cert, config.key)
    wanted = [config.listen] + ([config.listen.with_port(config.http_port)] if config.http_port else [])
    busy = busy_ports(host, wanted)
    if busy is None:
        warnings.append(f"cannot list listening ports on {host.name} (no ss/netstat); nginx will say if "
                        "the port is taken")
    elif busy:
        shown = ", ".join(str(b) for b in busy)
        if not config.stop_registry:
            raise StubError(f"{shown} already in use on {host.name} (the registry?); pass --stop-registry CMD "
                            "to free it, or another --listen")
        warnings.append(f"{shown} in use now; --stop-registry must free it")
    return warnings, compose_cmd, exists


def _state_doc(config: StubConfig, compose_cmd: str | None, registry_url: str | None, host: Host) -> dict[str, Any]:
    return {
        "version": STATE_VERSION, "glcleanup": __version__, "host": host.name,
        "mode": config.mode, "listen": str(config.listen), "scheme": config.scheme,
        "http_port": config.http_port, "cert": config.cert, "key": config.key, "upstream": config.upstream,
        "deploy": config.deploy, "compose_cmd": compose_cmd,
        "stubctl_deploy": deploy_word(config.deploy, compose_cmd), "compose_project": config.compose_project,
        "dir": config.dir, "requested_at": iso(_now()), "for_seconds": config.for_seconds,
        "quiet_seconds": config.quiet_seconds, "stop_registry": config.stop_registry,
        "start_registry": config.start_registry, "registry_url": registry_url,
        "restore": f"glcleanup stub off --registry-host {host.name} --dir {config.dir} --yes",
    }


def _same_request(state: dict[str, Any], config: StubConfig) -> bool:
    return (state.get("mode"), state.get("listen"), state.get("upstream"), state.get("deploy")) == \
        (config.mode, str(config.listen), config.upstream, config.deploy)


def _prepare(host: Host, config: StubConfig, compose_cmd: str | None, existed: bool) -> list[str]:
    """Write the rendered files into --dir and check the config; on failure leave nothing behind."""
    written = ["nginx.conf", "stubctl.sh", "deploy"]
    if config.deploy == "compose":
        written += ["docker-compose.yml", ".env"] + ([] if config.tls else list(NO_TLS_PLACEHOLDERS))
    d = config.dir
    try:
        if not existed:
            _must(sh_check(host, _MKDIR, d), f"cannot create {d}")
        _must(sh_check(host, _ROTATE, d), f"cannot prepare {d}")
        host.put(render_nginx(config).encode(), f"{d}/nginx.conf", 0o644)
        host.put(stub_file("stubctl.sh").encode(), f"{d}/stubctl.sh", 0o755)
        word = deploy_word(config.deploy, compose_cmd)
        host.put(f"{word} {config.compose_project}\n".encode(), f"{d}/deploy", 0o644)
        if config.deploy == "compose":
            host.put(stub_file("docker-compose.yml").encode(), f"{d}/docker-compose.yml", 0o644)
            host.put(render_env(config).encode(), f"{d}/.env", 0o644)
            if not config.tls:
                for placeholder in NO_TLS_PLACEHOLDERS:
                    host.put(b"", f"{d}/{placeholder}", 0o644)
        check = stubctl(host, "check", d, word, config.compose_project)
        if check.exit_code != 0:
            raise StubError(f"the stub's nginx config does not pass on {host.name}: {tail_text(check)}")
    except BaseException:
        try:
            if existed:
                sh_check(host, _REMOVE_WRITTEN, d, *written)
            else:
                sh_check(host, _REMOVE_CREATED, d)
        except GlcleanupError:
            pass
        raise
    return written


def _must(result: Any, what: str) -> None:
    if result.exit_code != 0:
        raise StubError(f"{what}: {tail_text(result)}")


def _restore_args(state: dict[str, Any], directory: str, reason: str) -> list[str]:
    return ["restore", directory, reason, str(state["stubctl_deploy"]), str(state["compose_project"]),
            *[str(a) for a in state.get("start_registry") or []]]


def _watch_interval(config: StubConfig, guard: float) -> int:
    spans = [s for s in (config.for_seconds, config.quiet_seconds, int(guard)) if s > 0]
    return max(1, min(10, min(spans) // 10)) if spans else 10


def stub_on(host: Host, config: StubConfig, *, apply: bool, registry_url: str | None = None,
            guard_seconds: float = GUARD_SECONDS, say: Say = _quiet, not_before: int | None = None) -> OnResult:
    """Plan, or (apply) check, record, stop the registry, start, verify, confirm; roll back on failure."""
    status = read_status(host, config.dir)
    if status.state_file:
        state = status.state or {}
        if status.running and _same_request(state, config):
            return OnResult(config, [], already=True, status=status.to_json(),
                            warnings=[f"already on since {status.values.get('confirmed_since', '?')}; "
                                      "nothing changed"])
        if status.running:
            raise StubError(f"a stub is already on in {config.dir} ({state.get('mode')} on {state.get('listen')}); "
                            "run `stub off` first")
        raise StubError(f"{config.dir}/state.json is left from an earlier stub that is not running: run "
                        "`stub off` to restore what it recorded, then `stub on` again")
    warnings, compose_cmd, existed = preflight(host, config)
    result = OnResult(config, plan_on(config, compose_cmd), warnings=warnings)
    if not apply:
        return result
    try:
        _prepare(host, config, compose_cmd, existed)
    except KeyboardInterrupt as exc:
        raise Interrupted(f"{exc or 'SIGINT'} during stub on, before anything but {config.dir} was touched: "
                          "the files it wrote there were removed; nothing else changed") from None
    say(f"nginx config checked; recording state in {config.dir}/state.json")
    state = _state_doc(config, compose_cmd, registry_url, host)
    host.put(json.dumps(state, indent=2).encode() + b"\n", f"{config.dir}/state.json", 0o600)
    # GitLab's latest pending retry (epoch): --quiet-minutes never switches off before it (stubctl.sh watcher)
    host.put(f"{int(not_before or 0)}\n".encode(), f"{config.dir}/not_before", 0o600)
    progress: dict[str, bool] = {"registry_stopped": False}
    try:
        _activate(host, config, state, guard_seconds, say, result, progress)
    except BaseException as exc:
        # the registry is started again only if this run got as far as stopping it
        message = _rollback(host, config.dir, state, guard_seconds, start=progress["registry_stopped"])
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"{exc or 'SIGINT'} during stub on: {message}") from None
        text = str(exc) if isinstance(exc, GlcleanupError) else f"{type(exc).__name__}: {exc}"
        raise StubError(f"stub on failed: {text}; {message}") from exc
    result.applied = True
    result.status = read_status(host, config.dir).to_json()
    return result


def hold_until(host: Host, directory: str, not_before: int) -> None:
    """Move the watcher's not-before mark (it rereads the file on each tick): --quiet-minutes counts from it."""
    host.put(f"{int(not_before)}\n".encode(), f"{directory}/not_before", 0o600)


def _activate(host: Host, config: StubConfig, state: dict[str, Any], guard: float, say: Say,
              result: OnResult, progress: dict[str, bool]) -> None:
    d = config.dir
    word = str(state["stubctl_deploy"])
    launched = sh_check(host, _LAUNCH_WATCHER, d, str(int(guard)), str(config.for_seconds),
                        str(config.quiet_seconds), str(_watch_interval(config, guard)), word,
                        config.compose_project, *(config.start_registry or []))
    _must(launched, "cannot start the watcher on the host")
    if config.stop_registry:
        say(f"stopping the registry: {quote_argv(config.stop_registry)}")
        progress["registry_stopped"] = True
        stopped = host.run(config.stop_registry, timeout=COMMAND_TIMEOUT)
        if stopped.exit_code != 0:
            raise StubError(f"--stop-registry failed (exit {stopped.exit_code}): {tail_text(stopped)}")
        wanted = [config.listen] + ([config.listen.with_port(config.http_port)] if config.http_port else [])
        busy = wait_ports_free(host, wanted, PORT_WAIT)
        if busy:
            raise StubError(f"{', '.join(str(b) for b in busy)} still in use after --stop-registry")
    say(f"starting the stub ({config.deploy})")
    started = stubctl(host, "start", d, word, config.compose_project, timeout=COMMAND_TIMEOUT + 60)
    if started.exit_code != 0:
        log = sh_check(host, 'tail -n 5 "$1/error.log" 2>/dev/null', d).text.strip()
        raise StubError(f"the stub did not start: {tail_text(started)}" + (f" | error.log: {log}" if log else ""))
    pid = started.text.strip().rpartition(" ")[2] or "-"
    say("verifying every answer from the registry host")
    problems = verify(host, config)
    if problems:
        raise StubError("the stub answers wrong: " + "; ".join(problems))
    result.verified = _verified_labels(config)
    since = _now()
    until = iso(since + timedelta(seconds=config.for_seconds)) if config.for_seconds else "-"
    final = {**state, "since": iso(since), "until": None if until == "-" else until,
             "pid": int(pid) if pid.isdigit() else None, "container": None if pid.isdigit() else pid}
    host.put(json.dumps(final, indent=2).encode() + b"\n", f"{d}/state.json.confirmed", 0o600)
    confirmed = stubctl(host, "confirm", d, iso(since), until, pid, timeout=30)
    if confirmed.exit_code == StubctlExit.NOT_ON:
        raise StubError(f"the guard on {host.name} already restored the registry (took longer than {guard:.0f} s)")
    _must(confirmed, "cannot confirm the stub")


def _verified_labels(config: StubConfig) -> list[str]:
    return [f"{p.label} -> {'/'.join(str(s) for s in p.status)}" for p in probes_for(config)]


def _rollback(host: Host, directory: str, state: dict[str, Any], guard: float, start: bool = True) -> str:
    """Undo a half-done `on`: the same restore as `off`. Retries once (SSHHost reconnects)."""
    last: Exception | None = None
    if not start:
        state = {**state, "start_registry": None}
    for _attempt in range(2):
        try:
            result = stubctl(host, *_restore_args(state, directory, "rollback"), timeout=COMMAND_TIMEOUT + 60)
        except ConnectError as exc:
            last = exc
            time.sleep(0.5)
            continue
        if result.exit_code == 0:
            return "rolled back: stub stopped" + (", registry started again" if state.get("start_registry") else "") \
                + ", state removed"
        if result.exit_code == StubctlExit.START_REGISTRY_FAILED:
            return (f"rolled back the stub, but --start-registry failed: {tail_text(result)}; start the registry "
                    f"by hand, then run `stub off --dir {directory} --yes`")
        return f"rollback failed ({tail_text(result)}); run `stub off --dir {directory} --yes`"
    return (f"could not reach {host.name} to roll back ({last}); the guard on the host restores by itself "
            f"within {guard:.0f} s (log: {directory}/watcher.log)")


# --- off ------------------------------------------------------------------------------------------------

@dataclass
class OffResult:
    """What `stub off` planned or did, and whether the real registry answers again."""

    directory: str
    plan: list[str] = field(default_factory=list)
    applied: bool = False
    already_off: bool = False
    registry_ok: bool | None = None
    registry_detail: str = ""
    last_off: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan, "applied": self.applied, "already_off": self.already_off,
                "registry_ok": self.registry_ok, "registry_detail": self.registry_detail,
                "last_off": self.last_off}


def plan_off(state: dict[str, Any]) -> list[str]:
    d = state.get("dir")
    how = "stop nginx by its pid file" if state.get("deploy") == "nginx" else \
        f"{state.get('compose_cmd') or 'docker compose'} -f {d}/docker-compose.yml down"
    steps = [f"stop the {state.get('mode')} stub on {state.get('listen')}: {how}"]
    if state.get("start_registry"):
        steps.append(f"start the registry: {quote_argv(state['start_registry'])}")
    steps.append(f"retire {d}/state.json (kept as last-state.json)")
    return steps


def stub_off(host: Host, directory: str, *, apply: bool, registry_url: str | None = None,
             say: Say = _quiet) -> OffResult:
    """Restore exactly what `on` recorded; idempotent (already off is success). The state file is trusted
    only when it is the user's own and not writable by others, and in the shape `on` writes."""
    check_owner(host, directory)
    status = read_status(host, directory)
    result = OffResult(directory)
    if not status.state_file:
        result.already_off = True
        doc = status.to_json()
        result.last_off = doc.get("last_off")
        return result
    state = status.state or {}
    check_state(state, directory)
    result.plan = plan_off(state)
    if not apply:
        return result
    say("stopping the stub and restoring the registry")
    try:
        restored = stubctl(host, *_restore_args(state, directory, "off"), timeout=COMMAND_TIMEOUT + 60)
    except KeyboardInterrupt as exc:
        raise Interrupted(
            f"{exc or 'SIGINT'} during stub off, while the restore ran on {host.name}: the stub may be stopped "
            f"and the registry not yet started; run `glcleanup stub off --registry-host {host.name} --dir "
            f"{directory} --yes` again (it finishes the restore; off twice is fine)") from None
    if restored.exit_code == StubctlExit.START_REGISTRY_FAILED:
        raise StubError(f"the stub is stopped, but --start-registry failed: {tail_text(restored)}; fix it and run "
                        "`stub off` again (it retries the start command)")
    if restored.exit_code == StubctlExit.BUSY:
        raise StubError("another restore (the watcher?) is running in the same --dir; try again in a minute")
    if restored.exit_code != 0:
        raise StubError(f"could not stop the stub: {tail_text(restored)}")
    result.applied = True
    if "already-off" in restored.text:
        result.already_off = True
    url = registry_url or state.get("registry_url") or _listen_url(state)
    if url:
        say(f"checking that the registry answers at {url}")
        result.registry_ok, result.registry_detail = registry_answers(host, url)
    return result


def _listen_url(state: dict[str, Any]) -> str | None:
    """Where the real registry should answer again once restarted: the address the stub held."""
    if not state.get("start_registry"):
        return None
    address, _, port = str(state.get("listen") or "").rpartition(":")
    if not port.isdigit():
        return None
    listen = Listen(address.strip("[]") or "0.0.0.0", int(port))
    return f"{state.get('scheme') or 'https'}://{listen.connect_host}:{listen.port}"


def stub_status(host: Host, directory: str) -> StubStatus:
    return read_status(host, directory)


__all__ = ["OffResult", "OnResult", "StubStatus", "parse_access_line", "plan_off", "plan_on", "preflight",
           "read_status", "stub_off", "stub_on", "stub_status"]
