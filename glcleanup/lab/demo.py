"""`glcleanup demo`: the whole incident and its cure, in a throwaway local lab.

Real registry, simulated GitLab 17.3.5 (no retry cap), real Ruby runner: an image is deleted
the way the UI does it, the worker starts looping, `scan` finds it, the registry log proves
it, `stop-loop` ends it, and the log goes quiet.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from glcleanup.lab.lab import Lab
from glcleanup.lab.registry import free_port, list_tags
from glcleanup.ops.check import CheckRequest, run_check
from glcleanup.ops.scan import ScanRequest, scan
from glcleanup.ops.stop_loop import StopLoopRequest, stop_loop
from glcleanup.settings import Settings, resolve
from glcleanup.stub.deploy import read_status, stub_off, stub_on
from glcleanup.stub.render import build_config
from glcleanup.transport import LocalHost

Say = Callable[[str], None]
Table = Callable[[list[dict[str, Any]], list[str]], None]  # rows, columns: the CLI renders them
DEMO_VERSION = "17.3.5"
SETTLE = 3.0


@contextlib.contextmanager
def _demo_state(tmp: Path) -> Iterator[None]:
    """The demo's journals live and die with the lab, so `glcleanup undo` never finds them later."""
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp / "state")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = old


def lab_settings(lab: Lab) -> Settings:
    """The settings an admin would export for this lab (what `glcleanup lab up` prints)."""
    return resolve(environ=lab.settings_env(), rails_host="local", rails_runner=lab.runner_command(),
                   registry_host="local", registry_url=lab.registry_url, url=lab.gitlab_url)


def count_deletes(log: Path, path: str) -> int:
    """Tag DELETEs for one repository in the registry's access log lines."""
    needle = f'"DELETE /v2/{path}/manifests/'.encode()
    try:
        return log.read_bytes().count(needle)
    except FileNotFoundError:
        return 0


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _plain_table(say: Say) -> Table:
    def show(rows: list[dict[str, Any]], columns: list[str]) -> None:
        for row in rows:
            say("   " + "  ".join(str(row.get(c)) for c in columns))

    return show


def run_demo(say: Say, directory: Path | None = None, version: str = DEMO_VERSION,
             table: Table | None = None) -> dict[str, Any]:
    """Play the story through `say` (lines) and `table` (rows); returns the facts it showed."""
    table = table or _plain_table(say)
    facts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="glcleanup-demo-") as tmp, _demo_state(Path(tmp)):
        lab = Lab(directory or Path(tmp) / "lab", version=version)
        say(f"== 1. A local lab: real registry (Distribution 2.8.2) + simulated GitLab {version}")
        with lab:
            settings = lab_settings(lab)
            say(f"   GitLab API {lab.gitlab_url}, registry {lab.registry_url}, runner {lab.runner_command()}")
            target = next(r for r in lab.repositories() if r["path"] == "acme/platform/api")
            say(f"\n== 2. An admin deletes the image {target['path']} in the UI "
                f"(DELETE /projects/:id/registry/repositories/{target['id']})")
            lab.delete_image(target["project"], int(target["id"]))
            wait_for(lambda: count_deletes(lab.registry_log, target["path"]) >= 6, timeout=20)
            facts["deletes_before_stop"] = count_deletes(lab.registry_log, target["path"])
            say(f"   The worker loops: {facts['deletes_before_stop']} DELETE /v2/{target['path']}/manifests/<tag> "
                "so far, each answered 400 DIGEST_INVALID")

            say("\n== 3. glcleanup scan --registry-log <registry log>")
            report = scan(settings, ScanRequest(source="all", registry_logs=[str(lab.registry_log)]))
            facts["scan"] = report.to_json()
            table(report.repositories, ["id", "path", "status", "sources"])
            for loop in report.loops:
                say(f"   loop: {loop['path']}: {loop['requests']} DELETEs, {loop['per_minute']}/min, "
                    f"codes {loop['codes']}, from {loop['user_agent']}")
            for warning in report.warnings:
                say(f"   warning: {warning}")
            facts["check_loop"] = _check_step(say, settings, lab, "3b. glcleanup check --registry-log <registry log>"
                                              "   (the monitoring check: CRITICAL while the loop runs)")
            facts["stop_loop"] = _stop_loop_step(say, lab, settings, target)
            wait_for(lambda: run_check(settings, _check_request(lab)).state != 2, timeout=20, step=0.5)
            facts["check_after"] = _check_step(say, settings, lab, "4b. glcleanup check again: OK once the DELETEs "
                                               "have stopped")
            root = directory.parent if directory else Path(tmp)
            facts["respond"] = _stub_step(say, lab, "respond", "acme/website", root / "stub-respond")
            facts["proxy"] = _stub_step(say, lab, "proxy", "alice/sandbox", root / "stub-proxy")
            say("\n== Done; the lab is taken down. On a real instance, `glcleanup undo` puts back what a stop-loop"
                " journal recorded.")
    return facts


def _check_request(lab: Lab) -> CheckRequest:
    return CheckRequest(registry_logs=[str(lab.registry_log)], probe=False)


def _check_step(say: Say, settings: Settings, lab: Lab, title: str) -> dict[str, Any]:
    say(f"\n== {title}")
    report = run_check(settings, _check_request(lab))
    say(f"   GLCLEANUP {report.state_name} - {report.summary}")
    say(f"   exit {report.state} (Nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)")
    return {"state": report.state_name, "summary": report.summary}


def _stop_loop_step(say: Say, lab: Lab, settings: Settings, target: dict[str, Any]) -> dict[str, Any]:
    say(f"\n== 4. glcleanup stop-loop --project {target['project']} --yes   (mode done: what GitLab does on success)")
    report = stop_loop(settings, StopLoopRequest(project=target["project"], mode="done", settle=SETTLE, apply=True))
    for row in report.plan:
        say(f"   plan: repository {row.get('id')} {row.get('path')}: {row.get('from')} -> {row.get('to')}")
    say(f"   journal: {report.journal}")
    say(f"   verified after a {SETTLE:.0f} s settle period: {report.verified}")
    stopped_at = count_deletes(lab.registry_log, target["path"])
    time.sleep(SETTLE)
    after = count_deletes(lab.registry_log, target["path"])
    say(f"   registry log: {after - stopped_at} more DELETE for {target['path']} in the {SETTLE:.0f} s after stop-loop")
    left = (report.left_in_registry or {}).get("repositories", [])
    for repo in left:
        tags = ", ".join(f"{t.get('tag')}@{str(t.get('digest'))[:19]}" for t in repo.get("tags", []))
        say(f"   left in the registry for garbage collection: {repo.get('path')}: {tags}")
    return {"verified": report.verified, "journal": report.journal, "deletes_after": after - stopped_at,
            "left_in_registry": left}


def _stub_step(say: Say, lab: Lab, mode: str, project: str, stub_dir: Path) -> dict[str, Any]:
    """Put the stub (or the proxy) where GitLab calls the registry and watch the loop end."""
    target = next(r for r in lab.repositories() if r["project"] == project)
    say(f"\n== {'5' if mode == 'respond' else '6'}. Another stuck image, {target['path']}: "
        f"glcleanup stub on --mode {mode} --yes")
    lab.delete_image(project, int(target["id"]))
    wait_for(lambda: count_deletes(lab.registry_log, target["path"]) >= 3, timeout=20)
    host = LocalHost()
    real_registry = lab.registry_api_url()
    config = build_config(mode=mode, listen=f"127.0.0.1:{free_port()}", dir=str(stub_dir),
                          upstream=real_registry if mode == "proxy" else None)
    started = time.monotonic()
    stub_on(host, config, apply=True)
    lab.set_registry_api_url(config.url)  # in production the stub takes the registry's own address
    gone = wait_for(lambda: all(r["id"] != target["id"] for r in lab.repositories()), timeout=30)
    took = time.monotonic() - started
    status = read_status(host, str(stub_dir)).to_json()
    stub_off(host, str(stub_dir), apply=True)
    lab.set_registry_api_url(real_registry)
    tags = list_tags(real_registry, target["path"])
    say(f"   the row is {'destroyed' if gone else 'STILL THERE'} {took:.1f} s after stub on; the stub answered "
        f"{status.get('requests')} requests ({status.get('deletes')} DELETE)")
    if mode == "respond":
        say(f"   the data stays in the real registry (orphaned, garbage-collect it): {target['path']} tags {tags}")
    else:
        say(f"   GitLab deleted by digest through the proxy: {target['path']} tags now {tags}")
    say("   glcleanup stub off --yes: the real registry is back")
    return {"destroyed": gone, "seconds": round(took, 2), "tags_left": tags, "stub": status}


__all__ = ["run_demo"]
