"""Everything the CLI shows and asks: one JSON document or tables on stdout, progress on stderr,
the one confirmation prompt, and the one place errors become a line and an exit code."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any

import typer
from tabulate import tabulate

from glcleanup.errors import GlcleanupError
from glcleanup.settings import TOKEN_ENV_VARS, redact

INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class Output(StrEnum):
    table = "table"
    json = "json"


def wants_json(output: str | None) -> bool:
    """`-o json`, or no terminal on stdout (a pipe to jq, cron)."""
    if output:
        return output == "json"
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


def can_ask(json_mode: bool) -> bool:
    """Only a person at a terminal is asked; JSON mode and pipes never are."""
    return not json_mode and sys.stdin.isatty() and sys.stderr.isatty()


def ask_yes(question: str) -> bool:
    """The one prompt: `y` or `yes` goes ahead, anything else says so and changes nothing."""
    answer = typer.prompt(f"{question} [y/N]", default="", show_default=False, err=True)
    if answer.strip().lower() in ("y", "yes"):
        return True
    info("nothing changed")
    return False


def confirm(question: str, *, yes: bool, json_mode: bool,
            hint: str = "nothing changed: run again with --yes to apply") -> bool:
    """`--yes` skips, a terminal asks, anything else changes nothing (and says how to go on)."""
    if yes:
        return True
    if can_ask(json_mode):
        return ask_yes(question)
    info(hint)
    return False


def known_secrets(*extra: str | None) -> list[str]:
    """What must never reach the screen: the resolved token and any token in the environment."""
    found = [os.environ.get(name) for name in TOKEN_ENV_VARS]
    return [s for s in (*extra, *found) if s]


@contextlib.contextmanager
def handle_errors(verbose: bool = False, secrets: Sequence[str | None] = ()) -> Iterator[None]:
    """The one error handler: a GlcleanupError is one redacted line (details after it, traceback only
    with -v) and its exit code; Ctrl-C is 130."""
    try:
        yield
    except GlcleanupError as exc:
        fail(exc, verbose, *secrets)
    except KeyboardInterrupt:
        typer.echo("glcleanup: interrupted", err=True)
        raise typer.Exit(INTERRUPTED) from None


def fail(exc: GlcleanupError, verbose: bool = False, *secrets: str | None) -> None:
    """One clear line on stderr and the error's exit code."""
    hidden = known_secrets(*secrets)
    if verbose:
        text = "".join(traceback.format_exception(exc))
        sys.stderr.write(redact(text, *hidden))
    typer.echo(f"glcleanup: error: {redact(str(exc), *hidden)}", err=True)
    if exc.details:
        typer.echo(redact(exc.details, *hidden), err=True)
    raise typer.Exit(int(exc.exit_code))
