"""The incident lab as one object: registry + simulated GitLab, in a directory, on loopback.

Two ways to run it, same files on disk:
- in-process (`with Lab(dir) as lab:`): the API server and the worker are threads of the caller,
  so tests and the demo can look at `lab.worker.passes` and `lab.api.request_count`;
- daemons (`Lab(dir).up()`, used by `glcleanup lab up`): the registry and a
  `python -m glcleanup.lab.daemon` process outlive the CLI; `lab.json` records their pids so
  `down()` (any process, any time, idempotent) stops exactly those.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from glcleanup.errors import LabError, UsageError
from glcleanup.lab import schema
from glcleanup.lab.registry import RegistryProcess, free_port, wait_port
from glcleanup.lab.seed import DemoInstance, seed_demo
from glcleanup.lab.worker import DeletionWorker
from glcleanup.paths import lab_dir

if TYPE_CHECKING:
    from glcleanup.lab.api import GitLabApiServer

RUNNER = Path(__file__).parent / "rails" / "gitlab-rails"
DEFAULT_VERSION = "17.3.5"
DEFAULT_TIME_SCALE = 0.05          # real seconds per GitLab minute: cron every 0.25 s
VERSION_RE = re.compile(r"\A\d{1,2}\.\d{1,2}\.\d{1,3}\Z")
DAEMON_MARKER = "glcleanup.lab.daemon"

WRAPPER = """#!/bin/sh
# glcleanup lab: this lab's `gitlab-rails` (real Ruby + ActiveRecord on the lab's SQLite database).
# Works locally or over SSH without any environment: the database is found next to this file.
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd -P)
GLCLEANUP_LAB_DB="$here/../gitlab.sqlite3"
: "${{GLCLEANUP_LAB_BOOT_LOG:=$here/../runner-boots.log}}"
export GLCLEANUP_LAB_DB GLCLEANUP_LAB_BOOT_LOG
exec {ruby} {runner} "$@"
"""


def default_dir() -> Path:
    """$XDG_STATE_HOME/glcleanup/lab (fallback ~/.local/state/glcleanup/lab)."""
    return lab_dir()


def _cmdline(pid: int) -> str | None:
    """The process's argv joined by spaces; None if gone or a zombie. Without /proc: signal 0."""
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    return ""


def pid_matches(pid: int | None, marker: str) -> bool:
    """Alive and still the process we started (a recycled pid is never signalled)."""
    if not pid:
        return False
    cmd = _cmdline(pid)
    return cmd is not None and (cmd == "" or marker in cmd)


def stop_pid(pid: int | None, marker: str, timeout: float = 5.0) -> None:
    """SIGTERM one recorded pid (only if it is still ours), wait, SIGKILL as a last resort."""
    if not pid or not pid_matches(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)     # reap it if it happens to be our child
        if not pid_matches(pid, marker):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def make_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1/localhost (it is its own CA file): (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not (cert.exists() and key.exists()):
        if shutil.which("openssl") is None:
            raise LabError("openssl not found on PATH (needed for --tls)")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


class Lab:
    """A lab directory: gitlab.sqlite3, registry/, logs, bin/gitlab-rails and lab.json."""

    def __init__(self, directory: Path | str | None = None, version: str = DEFAULT_VERSION,
                 time_scale: float = DEFAULT_TIME_SCALE, worker_slow: float = 0.0, api_latency: float = 0.0,
                 seed: bool = True, tls: bool = False) -> None:
        if not VERSION_RE.match(version):
            raise UsageError(f"not a GitLab version: {version!r} (expected e.g. 17.3.5)")
        self.dir = Path(directory or default_dir()).expanduser().resolve()
        self.version = version
        self.time_scale = time_scale
        self.worker_slow = worker_slow
        self.api_latency = api_latency
        self.seed = seed
        self.tls = tls
        self.registry: RegistryProcess | None = None
        self.api: GitLabApiServer | None = None
        self.worker: DeletionWorker | None = None
        self.demo: DemoInstance | None = None
        self._daemon: subprocess.Popen[bytes] | None = None

    # --- paths --------------------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.dir / "gitlab.sqlite3"

    @property
    def state_path(self) -> Path:
        return self.dir / "lab.json"

    @property
    def runner_path(self) -> Path:
        return self.dir / "bin" / "gitlab-rails"

    @property
    def registry_log(self) -> Path:
        return self.dir / "registry.log"

    @property
    def worker_log(self) -> Path:
        return self.dir / "sidekiq.log"

    @property
    def boot_log(self) -> Path:
        return self.dir / "runner-boots.log"

    # --- lab.json -----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise LabError(f"{self.state_path} is not valid JSON: {exc}") from exc
        return loaded

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the API token
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
            fh.write("\n")
        tmp.replace(self.state_path)

    @classmethod
    def load(cls, directory: Path | str | None = None) -> Lab:
        """The lab as `up()` left it (version and clock from lab.json)."""
        lab = cls(directory)
        state = lab.state()
        if not state:
            raise LabError(f"no lab in {lab.dir} (run `glcleanup lab up` first)")
        lab.version = state["version"]
        lab.time_scale = float(state.get("time_scale", DEFAULT_TIME_SCALE))
        lab.worker_slow = float(state.get("worker_slow", 0.0))
        lab.api_latency = float(state.get("api_latency", 0.0))
        return lab

    # --- lifecycle ----------------------------------------------------------------------------------
    def is_up(self) -> bool:
        state = self.state()
        return pid_matches(state.get("gitlab_pid"), DAEMON_MARKER) or pid_matches(
            state.get("registry_pid"), str(self.dir / "registry" / "config.yml"))

    def up(self, daemon: bool = True) -> dict[str, Any]:
        """Create (first time: seed) and start everything; returns the new lab.json content."""
        if self.registry is not None or self.is_up():
            raise LabError(f"the lab in {self.dir} is already up (glcleanup lab down --dir {self.dir})")
        ruby = shutil.which("ruby")
        if ruby is None:
            raise LabError("ruby not found on PATH (apt install ruby ruby-activerecord ruby-sqlite3)")
        self.dir.mkdir(parents=True, exist_ok=True)
        previous = self.state()
        if previous.get("version") and previous["version"] != self.version and self.db_path.exists():
            raise LabError(f"{self.dir} holds a GitLab {previous['version']} lab; use another --dir or "
                           "`glcleanup lab down --purge` first")
        fresh = not self.db_path.exists()
        try:
            cert = make_certificate(self.dir / "tls") if self.tls else None
            self.registry = RegistryProcess(self.dir / "registry", log_path=self.registry_log, tls=cert).start()
            schema.create(self.db_path, self.version, self.registry.url)
            self.set_registry_api_url(self.registry.url)
            self._set_setting("registry_ca_file", cert[0] if cert else "")
            if fresh and self.seed:
                self.demo = seed_demo(self.db_path, self.registry.url, verify=cert[0] if cert else True)
            self._write_wrapper(ruby)
            state = {
                "dir": str(self.dir), "version": self.version, "db": str(self.db_path),
                "token": previous.get("token") or "glpat-lab-" + secrets.token_urlsafe(18),
                "api_port": free_port(), "time_scale": self.time_scale, "worker_slow": self.worker_slow,
                "api_latency": self.api_latency, "registry_url": self.registry.url,
                "registry_port": self.registry.port, "registry_pid": self.registry.pid,
                "registry_ca": cert[0] if cert else None,
                "registry_log": str(self.registry_log), "worker_log": str(self.worker_log),
                "runner": str(self.runner_path), "mode": "daemon" if daemon else "in-process",
                "gitlab_pid": None, "started_at": schema.now_db(),
            }
            state["gitlab_url"] = f"http://127.0.0.1:{state['api_port']}"
            self._write_state(state)
            if daemon:
                self._start_daemon(state)
            else:
                self._start_in_process(state)
            self._write_state(state)
            return state
        except BaseException:
            self.down()
            raise

    def _start_daemon(self, state: dict[str, Any]) -> None:
        log = open(self.dir / "gitlab.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._daemon = subprocess.Popen(
                [sys.executable, "-m", DAEMON_MARKER, "--dir", str(self.dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        state["gitlab_pid"] = self._daemon.pid
        try:
            wait_port(int(state["api_port"]), timeout=20, proc=self._daemon)
        except RuntimeError as exc:
            tail = (self.dir / "gitlab.log").read_text(errors="replace")[-800:]
            raise LabError(f"the lab's GitLab daemon did not start: {exc}\n{tail}") from exc

    def _start_in_process(self, state: dict[str, Any]) -> None:
        from glcleanup.lab.api import GitLabApiServer

        self.api = GitLabApiServer(str(self.db_path), token=state["token"], latency=self.api_latency,
                                   host="127.0.0.1", port=int(state["api_port"]))
        self.api.start()
        state["gitlab_url"] = self.api.url
        self.worker = DeletionWorker(self.db_path, time_scale=self.time_scale, slow=self.worker_slow,
                                     log_path=self.worker_log).start()

    def _write_wrapper(self, ruby: str) -> None:
        """bin/gitlab-rails: locates its own database, so no lab path is baked into shell source."""
        self.runner_path.parent.mkdir(parents=True, exist_ok=True)
        self.runner_path.write_text(WRAPPER.format(ruby=shlex.quote(ruby), runner=shlex.quote(str(RUNNER))))
        self.runner_path.chmod(0o755)

    def down(self) -> bool:
        """Stop whatever this lab runs (in-process parts and recorded pids); True if anything ran."""
        ran = False
        if self.worker is not None:
            self.worker.stop()
            self.worker, ran = None, True
        if self.api is not None:
            self.api.stop()
            self.api, ran = None, True
        if self._daemon is not None:
            if self._daemon.poll() is None:
                ran = True
                self._daemon.terminate()
                try:
                    self._daemon.wait(10)
                except subprocess.TimeoutExpired:
                    self._daemon.kill()
                    self._daemon.wait(5)
            self._daemon = None
        if self.registry is not None:
            self.registry.stop()
            self.registry, ran = None, True
        state = self.state()
        if state:
            for key, marker in (("gitlab_pid", DAEMON_MARKER),
                                ("registry_pid", str(self.dir / "registry" / "config.yml"))):
                if pid_matches(state.get(key), marker):
                    ran = True
                    stop_pid(state[key], marker)
                state[key] = None
            state["stopped_at"] = schema.now_db()
            self._write_state(state)
        return ran

    def purge(self) -> None:
        """Remove the lab's files (database, registry storage, logs); only when it is down."""
        if self.is_up():
            raise LabError("the lab is up; run `glcleanup lab down` first")
        if self.dir.exists() and (self.state_path.exists() or self.db_path.exists()):
            shutil.rmtree(self.dir)

    def __enter__(self) -> Lab:
        self.up(daemon=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- what users and tests do with it ---------------------------------------------------------------
    def _require(self, key: str) -> Any:
        value = self.state().get(key)
        if value in (None, ""):
            raise LabError(f"no lab in {self.dir} (run `glcleanup lab up` first)")
        return value

    @property
    def gitlab_url(self) -> str:
        return str(self._require("gitlab_url"))

    @property
    def registry_url(self) -> str:
        return str(self._require("registry_url"))

    @property
    def token(self) -> str:
        return str(self._require("token"))

    def runner_command(self) -> str:
        return shlex.join([str(self.runner_path), "runner"])

    def settings_env(self) -> dict[str, str]:
        """The environment that points glcleanup at this lab (design.md §4 names)."""
        return {
            "GITLAB_URL": self.gitlab_url,
            "GITLAB_PRIVATE_TOKEN": self.token,
            "GLCLEANUP_RAILS_HOST": "local",
            "GLCLEANUP_RAILS_RUNNER": self.runner_command(),
            "GLCLEANUP_REGISTRY_HOST": "local",
            "GLCLEANUP_REGISTRY_URL": self.registry_url,
            "GLCLEANUP_LAB_REGISTRY_LOG": str(self.registry_log),
            "GLCLEANUP_LAB_DIR": str(self.dir),
            **({"GLCLEANUP_LAB_REGISTRY_CA": ca} if (ca := self.state().get("registry_ca")) else {}),
        }

    def set_registry_api_url(self, url: str, ca_file: str | None = None) -> None:
        """Repoint GitLab at a registry (the stub, a proxy): the worker reads it on its next pass.

        `ca_file` is what GitLab would trust for it (/etc/gitlab/trusted-certs); None keeps the current one.
        """
        self._set_setting("registry_api_url", url)
        if ca_file is not None:
            self._set_setting("registry_ca_file", ca_file)

    def _set_setting(self, key: str, value: str) -> None:
        conn = schema.connect(self.db_path)
        try:
            schema.set_setting(conn, key, value)
        finally:
            conn.close()

    def registry_api_url(self) -> str:
        conn = schema.connect(self.db_path)
        try:
            return schema.setting(conn, "registry_api_url") or ""
        finally:
            conn.close()

    def delete_image(self, project_path: str, repo_id: int) -> int:
        """What the UI's delete button does: REST DELETE, which marks the row delete_scheduled."""
        url = (f"{self.gitlab_url}/api/v4/projects/{quote(project_path, safe='')}"
               f"/registry/repositories/{int(repo_id)}")
        resp = requests.delete(url, headers={"PRIVATE-TOKEN": self.token}, timeout=30)
        if resp.status_code == 404:
            raise LabError(f"no repository {repo_id} in project {project_path}")
        if not resp.ok:
            raise LabError(f"DELETE {url} answered {resp.status_code}: {resp.text[:200]}")
        return resp.status_code

    def repositories(self) -> list[dict[str, Any]]:
        """Every container repository with its project path and status name (for status/demo)."""
        conn = schema.connect(self.db_path)
        try:
            rows = conn.execute(
                "SELECT c.*, r.path AS project FROM container_repositories c LEFT JOIN routes r "
                "ON r.source_type = 'Project' AND r.source_id = c.project_id ORDER BY c.id").fetchall()
        finally:
            conn.close()
        out = []
        for row in rows:
            item = dict(row)
            item["path"] = "/".join(p for p in (row["project"], row["name"]) if p).lower()
            item["status"] = schema.STATUS_NAME.get(row["status"]) if row["status"] is not None else None
            out.append(item)
        return out

    def status(self) -> dict[str, Any]:
        state = self.state()
        registry_marker = str(self.dir / "registry" / "config.yml")
        gitlab_alive = (self.api is not None) or pid_matches(state.get("gitlab_pid"), DAEMON_MARKER)
        registry_alive = pid_matches(state.get("registry_pid"), registry_marker)
        counts: dict[str, int] = {}
        images = []
        if self.db_path.exists():
            for repo in self.repositories():
                key = repo["status"] or "active"
                counts[key] = counts.get(key, 0) + 1
                images.append({k: repo.get(k) for k in ("id", "project", "path", "status")})
        return {
            "dir": str(self.dir),
            "state": "up" if gitlab_alive and registry_alive else ("partial" if gitlab_alive or registry_alive
                                                                  else "down"),
            "version": state.get("version", self.version),
            "gitlab": {"url": state.get("gitlab_url"), "pid": state.get("gitlab_pid"), "running": gitlab_alive},
            "registry": {"url": state.get("registry_url"), "pid": state.get("registry_pid"),
                         "running": registry_alive, "log": state.get("registry_log"),
                         "api_url": self.registry_api_url() if self.db_path.exists() else None},
            "runner": state.get("runner"),
            "repositories": counts,
            "images": images,
            "worker_passes": _count_lines(self.worker_log),
            "runner_boots": _count_lines(self.boot_log),
        }


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0
