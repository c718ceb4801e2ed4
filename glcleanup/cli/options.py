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


def _connection(*flags: str, env: str | None = None, metavar: str, help: str) -> Any:
    """A design.md §4 connection option: its flags, its environment variable, what to type."""
    return typer.Option(*flags, envvar=env, metavar=metavar, help=help, rich_help_panel=CONNECTION)


_COMMON: list[tuple[str, Any, Any]] = [
    ("url", str | None, _connection("--url", env="GITLAB_URL", metavar="URL",
                                    help="GitLab base URL, e.g. https://gitlab.example.com.")),
    ("gitlab_section", str | None, _connection("-g", "--gitlab", metavar="SECTION",
                                               help="python-gitlab config section.")),
    ("config_file", str | None, _connection("-c", "--config-file", env="PYTHON_GITLAB_CFG", metavar="FILE",
                                            help="python-gitlab config file.")),
    ("rails_host", str | None, _connection(
        "--rails-host", env="GLCLEANUP_RAILS_HOST", metavar="HOST",
        help="Where `gitlab-rails runner` runs: local or [ssh://][user@]host[:port].")),
    ("rails_runner", str | None, _connection(
        "--rails-runner", env="GLCLEANUP_RAILS_RUNNER", metavar="CMD",
        help="Runner command (default 'gitlab-rails runner'); glcleanup appends '-' and sends the script "
             "on stdin, e.g. 'docker exec -i gitlab gitlab-rails runner'.")),
    ("registry_host", str | None, _connection(
        "--registry-host", env="GLCLEANUP_REGISTRY_HOST", metavar="HOST",
        help="The registry's host (logs, stub): local or [ssh://][user@]host[:port].")),
    ("registry_url", str | None, _connection(
        "--registry-url", env="GLCLEANUP_REGISTRY_URL", metavar="URL",
        help="The registry endpoint as GitLab calls it (registry_api_url).")),
    ("registry_ca", str | None, _connection(
        "--registry-ca", env="GLCLEANUP_REGISTRY_CA", metavar="FILE",
        help="CA bundle (PEM) for a registry with a private CA (default: GITLAB_SSL_VERIFY, then the system's).")),
    ("ssh_key", str | None, _connection("--ssh-key", env="GLCLEANUP_SSH_KEY", metavar="FILE",
                                        help="SSH private key (else agent, ssh config, default keys).")),
    ("known_hosts", str | None, _connection(
        "--known-hosts", env="GLCLEANUP_KNOWN_HOSTS", metavar="FILE",
        help="known_hosts file (default ~/.ssh/known_hosts); unknown or changed keys are refused.")),
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
