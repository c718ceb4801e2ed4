"""The options every command takes (design.md §4), and the decorators that register commands.

`@command(app, name)` appends the connection options to the function's signature (so Typer shows
them, with their env vars), resolves them into a `Settings` and runs the command inside the one
error handler. `@plain_command(app, name)` is the same handler for commands without settings (lab,
demo, version).
"""

from __future__ import annotations

import copy
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from glcleanup.cli.output import Output, handle_errors, wants_json
from glcleanup.settings import Settings, resolve

F = TypeVar("F", bound=Callable[..., Any])


CONNECTION = "Connection"
_COMMON: list[tuple[str, Any, Any]] = [
    ("url", str | None, typer.Option("--url", envvar="GITLAB_URL", metavar="URL",
                                     help="GitLab base URL, e.g. https://gitlab.example.com.",
                                     rich_help_panel=CONNECTION)),
    ("gitlab_section", str | None, typer.Option("-g", "--gitlab", metavar="SECTION",
                                                help="python-gitlab config section.", rich_help_panel=CONNECTION)),
    ("config_file", str | None, typer.Option("-c", "--config-file", envvar="PYTHON_GITLAB_CFG", metavar="FILE",
                                             help="python-gitlab config file.", rich_help_panel=CONNECTION)),
    ("rails_host", str | None, typer.Option(
        "--rails-host", envvar="GLCLEANUP_RAILS_HOST", metavar="HOST",
        help="Where `gitlab-rails runner` runs: local or [ssh://][user@]host[:port].",
        rich_help_panel=CONNECTION)),
    ("rails_runner", str | None, typer.Option(
        "--rails-runner", envvar="GLCLEANUP_RAILS_RUNNER", metavar="CMD",
        help="Runner command (default 'gitlab-rails runner'); glcleanup appends '-' and sends the script "
             "on stdin, e.g. 'docker exec -i gitlab gitlab-rails runner'.", rich_help_panel=CONNECTION)),
    ("registry_host", str | None, typer.Option(
        "--registry-host", envvar="GLCLEANUP_REGISTRY_HOST", metavar="HOST",
        help="The registry's host (logs, stub): local or [ssh://][user@]host[:port].",
        rich_help_panel=CONNECTION)),
    ("registry_url", str | None, typer.Option(
        "--registry-url", envvar="GLCLEANUP_REGISTRY_URL", metavar="URL",
        help="The registry endpoint as GitLab calls it (registry_api_url).", rich_help_panel=CONNECTION)),
    ("registry_ca", str | None, typer.Option(
        "--registry-ca", envvar="GLCLEANUP_REGISTRY_CA", metavar="FILE",
        help="CA bundle (PEM) for a registry with a private CA (default: GITLAB_SSL_VERIFY, then the system's).",
        rich_help_panel=CONNECTION)),
    ("ssh_key", str | None, typer.Option("--ssh-key", envvar="GLCLEANUP_SSH_KEY", metavar="FILE",
                                         help="SSH private key (else agent, ssh config, default keys).",
                                         rich_help_panel=CONNECTION)),
    ("known_hosts", str | None, typer.Option(
        "--known-hosts", envvar="GLCLEANUP_KNOWN_HOSTS", metavar="FILE",
        help="known_hosts file (default ~/.ssh/known_hosts); unknown or changed keys are refused.",
        rich_help_panel=CONNECTION)),
    ("output", Output | None, typer.Option("-o", "--output",
                                           help="table (default on a terminal) or json (one document).")),
    ("verbose", bool, typer.Option("-v", "--verbose", help="Show tracebacks and debug logs on stderr.")),
]
_COMMON_NAMES = {name for name, _, _ in _COMMON}
_DEFAULTS = {"verbose": False}

# Which connection options a command's --help shows: only those it uses (`-g`/`-c`, `-o`, `-v` always,
# since a config section can hold every setting). The others are still accepted, hidden (design.md §4:
# every command takes every connection option, so one set of flags or a shell alias works everywhere).
API = ("url",)
RAILS = ("rails_host", "rails_runner", "ssh_key", "known_hosts")
REGISTRY_HOST = ("registry_host", "ssh_key", "known_hosts")
REGISTRY_URL = ("registry_url", "registry_ca")
ALL = tuple(name for name, _, _ in _COMMON)
_ALWAYS = ("gitlab_section", "config_file", "output", "verbose")


def command(app: typer.Typer, name: str, uses: tuple[str, ...] = ALL, **kwargs: Any) -> Callable[[F], F]:
    """Register `fn(settings: Settings, ...)` as a command taking the connection options; `uses` are shown."""
    wanted = set(uses) | set(_ALWAYS)

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)  # resolve `from __future__` strings
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in sig.parameters.values() if p.name != "settings"]
        extra = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY,
                              annotation=Annotated[ann, opt if n in wanted else _hidden(opt)],
                              default=_DEFAULTS.get(n))
            for n, ann, opt in _COMMON
        ]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra

        @functools.wraps(fn)
        def wrapper(**values: Any) -> Any:
            common = {k: values.pop(k) for k in list(values) if k in _COMMON_NAMES}
            verbose = bool(common.get("verbose"))
            secrets: list[str | None] = []
            with handle_errors(verbose, secrets):
                out = common.pop("output")
                settings = resolve(output=out.value if out else None, **common)
                secrets.append(settings.token)
                code = fn(settings, **values)
            raise typer.Exit(int(code or 0))

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        app.command(name, **kwargs)(wrapper)
        return fn

    return decorate


def _hidden(option: Any) -> Any:
    """The same option, left out of --help."""
    twin = copy.copy(option)
    twin.hidden = True
    return twin


def plain_command(app: typer.Typer, name: str, **kwargs: Any) -> Callable[[F], F]:
    """Register `fn(...)` (no settings) under the one error handler; it returns an exit code or None."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **values: Any) -> Any:
            with handle_errors():
                code = fn(*args, **values)
            raise typer.Exit(int(code or 0))

        app.command(name, **kwargs)(wrapper)
        return fn

    return decorate


def json_mode(settings: Settings) -> bool:
    """The settings' `-o`, else whether stdout is a terminal."""
    return wants_json(settings.output)
