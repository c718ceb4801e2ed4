"""Shared CLI plumbing: the connection options every command takes, rendering, error mapping.

Commands are plain functions decorated with `@command(app)`: the decorator appends the
design.md §4 options to the signature (so Typer shows them, with their env vars) and
hands the command a resolved `Settings`. Errors become exit codes here and nowhere else.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import traceback
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from tabulate import tabulate

from glcleanup.errors import ExitCode, GlcleanupError
from glcleanup.settings import Settings, redact, resolve

F = TypeVar("F", bound=Callable[..., Any])


class Output(StrEnum):
    table = "table"
    json = "json"


CONNECTION = "Connection"
_COMMON: list[tuple[str, Any, Any]] = [
    ("url", str | None, typer.Option("--url", envvar="GITLAB_URL", help="GitLab base URL.",
                                     rich_help_panel=CONNECTION)),
    ("gitlab_section", str | None, typer.Option("-g", "--gitlab", help="python-gitlab config section.",
                                                rich_help_panel=CONNECTION)),
    ("config_file", str | None, typer.Option("-c", "--config-file", envvar="PYTHON_GITLAB_CFG",
                                             help="python-gitlab config file.", rich_help_panel=CONNECTION)),
    ("rails_host", str | None, typer.Option(
        "--rails-host", envvar="GLCLEANUP_RAILS_HOST",
        help="Where `gitlab-rails runner` runs: local or [ssh://][user@]host[:port].",
        rich_help_panel=CONNECTION)),
    ("rails_runner", str | None, typer.Option(
        "--rails-runner", envvar="GLCLEANUP_RAILS_RUNNER",
        help="Runner command (default 'gitlab-rails runner'); glcleanup appends '-' and sends the script "
             "on stdin, e.g. 'docker exec -i gitlab gitlab-rails runner'.", rich_help_panel=CONNECTION)),
    ("registry_host", str | None, typer.Option(
        "--registry-host", envvar="GLCLEANUP_REGISTRY_HOST",
        help="The registry's host (logs, stub): local or [ssh://][user@]host[:port].",
        rich_help_panel=CONNECTION)),
    ("registry_url", str | None, typer.Option(
        "--registry-url", envvar="GLCLEANUP_REGISTRY_URL",
        help="The registry endpoint as GitLab calls it (registry_api_url).", rich_help_panel=CONNECTION)),
    ("ssh_key", str | None, typer.Option("--ssh-key", envvar="GLCLEANUP_SSH_KEY",
                                         help="SSH private key (else agent, ssh config, default keys).",
                                         rich_help_panel=CONNECTION)),
    ("known_hosts", str | None, typer.Option(
        "--known-hosts", envvar="GLCLEANUP_KNOWN_HOSTS",
        help="known_hosts file (default ~/.ssh/known_hosts); unknown or changed keys are refused.",
        rich_help_panel=CONNECTION)),
    ("output", Output | None, typer.Option("-o", "--output",
                                           help="table (default on a terminal) or json (one document).")),
    ("verbose", bool, typer.Option("-v", "--verbose", help="Show tracebacks and debug logs on stderr.")),
]
_COMMON_NAMES = {name for name, _, _ in _COMMON}
_DEFAULTS = {"verbose": False}


def command(app: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register `fn(settings: Settings, ...)` as a command taking the common options."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)  # resolve `from __future__` strings
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in sig.parameters.values() if p.name != "settings"]
        extra = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY,
                              annotation=Annotated[ann, opt], default=_DEFAULTS.get(n))
            for n, ann, opt in _COMMON
        ]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra

        @functools.wraps(fn)
        def wrapper(**values: Any) -> Any:
            common = {k: values.pop(k) for k in list(values) if k in _COMMON_NAMES}
            verbose = bool(common.get("verbose"))
            try:
                out = common.pop("output")
                settings = resolve(output=out.value if out else None, **common)
                code = fn(settings, **values)
            except GlcleanupError as exc:
                fail(exc, verbose)
            except KeyboardInterrupt:
                typer.echo("glcleanup: interrupted", err=True)
                raise typer.Exit(130) from None
            raise typer.Exit(int(code or 0))

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        app.command(name, **kwargs)(wrapper)
        return fn

    return decorate


def fail(exc: GlcleanupError, verbose: bool = False, *secrets: str | None) -> None:
    """One clear line on stderr and the error's exit code (traceback only with -v)."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    message = redact(str(exc), *secrets)
    typer.echo(f"glcleanup: error: {message}", err=True)
    raise typer.Exit(int(exc.exit_code))


def wants_json(settings: Settings) -> bool:
    if settings.output:
        return settings.output == "json"
    return not sys.stdout.isatty()


def emit_json(document: Mapping[str, Any]) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")


def emit_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], title: str | None = None,
               empty: str = "(none)") -> None:
    rows = list(rows)
    if title:
        typer.echo(title)
    if not rows:
        typer.echo(empty)
        return
    typer.echo(tabulate([[_cell(r.get(c)) for c in columns] for r in rows], headers=list(columns)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


def info(message: str) -> None:
    """Progress for humans: stderr, so stdout stays machine-readable."""
    typer.echo(message, err=True)


__all__ = ["ExitCode", "Output", "command", "emit_json", "emit_table", "fail", "info", "wants_json"]
