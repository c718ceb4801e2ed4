"""Everything the CLI shows and asks: one JSON document or tables on stdout, progress on stderr,
the one confirmation prompt, and the one place errors become a line and an exit code."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any

import typer
from tabulate import tabulate

from glcleanup.errors import ExitCode, GlcleanupError, Interrupted
from glcleanup.settings import SECRET_ENV_VARS, redact

INTERRUPTED = int(ExitCode.INTERRUPTED)  # 128 + SIGINT, as shells report it
# SIGTERM (kill, systemd, a closing tmux) and SIGHUP (a dropped SSH session) mid-command must not kill a
# mutating command silently after its commit: they raise KeyboardInterrupt like Ctrl-C, so the same
# rollback or "what was committed" report runs.
INTERRUPT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


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


def emit(as_json: bool, document: Mapping[str, Any], render: Callable[[], None]) -> None:
    """The one choice every command makes: one JSON document, or the human rendering."""
    if as_json:
        emit_json(document)
    else:
        render()


def emit_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], title: str | None = None,
               empty: str = "(none)") -> None:
    rows = list(rows)
    if title:
        typer.echo(printable(title))
    if not rows:
        typer.echo(empty)
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = fit_widths([list(columns), *cells], terminal_width())
    typer.echo(tabulate(cells, headers=list(columns), maxcolwidths=widths))  # type: ignore[arg-type]


MIN_COLUMN = 12
_GAP = 2  # tabulate's "simple" format puts two spaces between columns


def terminal_width() -> int | None:
    """The width to fit: the terminal's (or $COLUMNS); None when stdout is a pipe (never wrap for tools)."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else None
    except (OSError, ValueError):  # no real file descriptor (captured output)
        return None


def fit_widths(table: Sequence[Sequence[str]], width: int | None) -> list[int | None] | None:
    """Column widths that make the table fit `width`: the widest columns give way first, down to
    MIN_COLUMN; tabulate then wraps their cells (a 220-character doctor detail, a digest list)."""
    if not width or not table:
        return None
    natural = [max(len(line) for row in table for line in (row[i] or "").splitlines() or [""])
               for i in range(len(table[0]))]
    limits = list(natural)
    while sum(limits) + _GAP * (len(limits) - 1) > width:
        widest = max(range(len(limits)), key=lambda i: limits[i])
        if limits[widest] <= MIN_COLUMN:
            break
        limits[widest] -= 1
    if limits == natural:
        return None
    return [limit if limit < nat else None for limit, nat in zip(limits, natural, strict=True)]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_CELL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, newlines: bool = True) -> str:
    """Text from logs, the registry or GitLab made safe for a terminal: escape sequences, carriage returns
    and bidi overrides shown as `\\xNN`/`\\uNNNN`, never interpreted (newlines kept unless `newlines=False`)."""
    pattern = _CONTROL if newlines else _CONTROL_CELL
    return pattern.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = " ".join(f"{k}:{v}" for k, v in value.items())
    else:
        text = str(value)
    return printable(text, newlines=False)


def info(message: str) -> None:
    """Progress for humans: stderr, so stdout stays machine-readable (terminal controls escaped)."""
    typer.echo(printable(message), err=True)


def say(message: str) -> None:
    """A result line for humans on stdout, terminal controls escaped (values come from outside)."""
    typer.echo(printable(message))


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
    found = [os.environ.get(name) for name in SECRET_ENV_VARS]
    return [s for s in (*extra, *found) if s]


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP behave like SIGINT while the block runs (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in INTERRUPT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def handle_errors(verbose: bool = False, secrets: Sequence[str | None] = ()) -> Iterator[None]:
    """The one error handler: a GlcleanupError is one redacted line (details after it, traceback only
    with -v) and its exit code; Ctrl-C, SIGTERM and SIGHUP are 130; anything unexpected is one line and
    exit 3, never a traceback without -v."""
    try:
        with signals_interrupt():
            yield
    except GlcleanupError as exc:
        fail(exc, verbose, *secrets)
    except KeyboardInterrupt:
        typer.echo("glcleanup: interrupted", err=True)
        raise typer.Exit(INTERRUPTED) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug or an unexpected answer: still one redacted line, never a raw traceback
        if _is_click_exception(exc):
            raise
        unexpected(exc, verbose, *secrets)


def _is_click_exception(exc: BaseException) -> bool:
    """Usage errors raised by the option parser (typer's bundled click) are shown by the group."""
    return hasattr(exc, "format_message") and hasattr(exc, "exit_code") and not isinstance(exc, GlcleanupError)


def unexpected(exc: Exception, verbose: bool = False, *secrets: str | None) -> None:
    """An exception glcleanup did not plan for: one line (the traceback with -v), secrets redacted, exit 3."""
    hidden = known_secrets(*secrets)
    if verbose:
        sys.stderr.write(redact("".join(traceback.format_exception(exc)), *hidden))
    message = " ".join(redact(f"{type(exc).__name__}: {exc}", *hidden).split())[:300]
    typer.echo(printable(f"glcleanup: error: unexpected {message}") + ("" if verbose else " (-v shows the traceback)"),
               err=True)
    raise typer.Exit(int(ExitCode.ENVIRONMENT))


def fail(exc: GlcleanupError, verbose: bool = False, *secrets: str | None) -> None:
    """One clear line on stderr and the error's exit code."""
    hidden = known_secrets(*secrets)
    if verbose:
        text = "".join(traceback.format_exception(exc))
        sys.stderr.write(redact(text, *hidden))
    label = "interrupted" if isinstance(exc, Interrupted) else "error"
    typer.echo(printable(f"glcleanup: {label}: {redact(str(exc), *hidden)}"), err=True)
    if exc.details:
        typer.echo(printable(redact(exc.details, *hidden)), err=True)
    raise typer.Exit(int(exc.exit_code))
