"""Runs a bundled Ruby script through `<rails runner> -` on a host and returns its JSON result.

The script travels on stdin (prelude + script, both bundled files); parameters travel as
one base64 argument (zlib-deflated JSON) that the prelude decodes: user input is data,
never Ruby source. The result is the one line after a marker, so whatever Rails prints
while booting cannot break parsing. One `run()` is one runner boot.
"""

from __future__ import annotations

import base64
import json
import shlex
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from glcleanup import gitlab_facts
from glcleanup.errors import ConfigError, NotFoundError, RunnerError, UsageError
from glcleanup.settings import Settings
from glcleanup.transport import Host, open_host

MARKER = b"GLCLEANUP-RESULT:"
EVENT = b"GLCLEANUP-EVENT:"
EventSink = Callable[[dict[str, Any]], None]
RUNNER_TIMEOUT = 900.0  # a Rails boot alone can take 30-90 s on a small host
MAX_PARAM_BYTES = 120_000  # one argv word; Linux allows 128 KiB


def script_source(name: str) -> bytes:
    """The prelude followed by the named bundled script, as sent on stdin."""
    folder = resources.files("glcleanup.gitlab") / "ruby"
    prelude = (folder / "_prelude.rb").read_bytes()
    try:
        body = (folder / f"{name}.rb").read_bytes()
    except FileNotFoundError as exc:
        raise RunnerError(f"no bundled Ruby script named {name!r}") from exc
    return prelude + b"\n" + body


def encode_params(params: Mapping[str, Any]) -> str:
    payload = base64.b64encode(zlib.compress(json.dumps(params, separators=(",", ":")).encode(), 9)).decode()
    if len(payload) > MAX_PARAM_BYTES:
        raise UsageError("too much data for one runner call; narrow it with --project/--repository")
    return payload


@dataclass
class RailsRunner:
    """A `gitlab-rails runner` reachable through a Host."""

    host: Host
    command: str = "gitlab-rails runner"
    timeout: float = RUNNER_TIMEOUT
    boots: int = 0

    def argv(self, params: Mapping[str, Any]) -> list[str]:
        try:
            words = shlex.split(self.command)
        except ValueError as exc:
            raise UsageError(f"cannot parse --rails-runner {self.command!r}: {exc}") from exc
        if not words:
            raise UsageError("--rails-runner is empty")
        return [*words, "-", encode_params(params)]

    def run(self, script: str, params: Mapping[str, Any] | None = None,
            on_event: EventSink | None = None) -> Any:
        """Boot the runner once, run `script`, return its result (or raise a GlcleanupError).

        `on_event` receives each `Glcleanup.event` document the moment its line arrives,
        so a caller can persist it (a journal) before the script goes on to change rows.
        """
        argv = self.argv({**(params or {}), "facts": gitlab_facts.for_ruby()})
        self.boots += 1
        sink = _EventSplitter(on_event) if on_event else None
        result = self.host.run(argv, stdin=script_source(script), timeout=self.timeout,
                               on_stdout=sink.feed if sink else None)
        return parse_output(result.stdout, result.stderr, result.exit_code, script)


class _EventSplitter:
    """Cuts the streamed stdout into lines and passes event documents on."""

    def __init__(self, on_event: EventSink) -> None:
        self.on_event = on_event
        self.buffer = b""

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.startswith(EVENT):
                try:
                    document = json.loads(line[len(EVENT):])
                except json.JSONDecodeError:
                    continue
                self.on_event(document)


def parse_output(stdout: bytes, stderr: bytes, exit_code: int, script: str = "script") -> Any:
    """Find the marker line; turn Ruby-side failures into one clear error."""
    document: dict[str, Any] | None = None
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                document = json.loads(line[len(MARKER) :])
            except json.JSONDecodeError as exc:
                raise RunnerError(f"{script}.rb printed an unreadable result: {exc}") from exc
            break
    if document is None:
        detail = _last_error_line(stderr) or _last_error_line(stdout) or f"exit status {exit_code}"
        if exit_code == 127 or "command not found" in detail or "No such file" in detail:
            raise RunnerError(f"the Rails runner could not be started: {detail}")
        raise RunnerError(f"the Rails runner failed before {script}.rb finished: {detail}")
    if document.get("ok"):
        return document.get("result")
    error = document.get("error") or {}
    message = str(error.get("message", "unknown error"))
    if error.get("kind") == "not_found":
        raise NotFoundError(message)
    if error.get("kind") == "refused":
        raise RunnerError(message)
    raise RunnerError(f"Ruby raised {error.get('class', 'an exception')} in {script}.rb: {message}")


def _last_error_line(text: bytes) -> str:
    lines = [ln.strip() for ln in text.decode("utf-8", "replace").splitlines() if ln.strip()]
    for line in lines:  # Ruby puts "file:line:in `m': message (Class)" first
        if "Error" in line or "error" in line or "(" in line:
            return line[:300]
    return lines[-1][:300] if lines else ""


def runner_from_settings(settings: Settings) -> RailsRunner:
    if not settings.rails_host:
        raise ConfigError("no --rails-host: say where `gitlab-rails runner` runs (local, or [user@]host[:port])")
    return RailsRunner(open_host(settings.rails_host, settings.ssh_options), settings.rails_runner)


def ping(settings: Settings) -> dict[str, Any]:
    """One boot that reads the version and the columns: proves the runner works."""
    runner = runner_from_settings(settings)
    try:
        result = runner.run("ping")
    finally:
        runner.host.close()
    return dict(result)
