"""The Typer app and its explicit list of commands. Each `cmd_*` module registers its own."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from glcleanup import __version__
from glcleanup.cli import (
    cmd_check,
    cmd_config,
    cmd_demo,
    cmd_doctor,
    cmd_lab,
    cmd_logs,
    cmd_requeue,
    cmd_scan,
    cmd_stop_loop,
    cmd_stub,
    cmd_undo,
    cmd_version,
)


class OneLineErrors(TyperGroup):
    """The root command: a usage error (unknown option, wrong type, missing value) is one line on stderr
    and exit 2, instead of click's usage block; help is still shown for `glcleanup` alone."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
                raise
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" or (ctx is None and exc.exit_code == 0):
                exc.show()  # type: ignore[attr-defined]
            else:
                where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                message = " ".join(str(exc.format_message()).split()).rstrip(".")
                typer.echo(f"glcleanup: error: {message}{where}", err=True)
            code = exc.exit_code
            if not standalone_mode:
                return code
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    name="glcleanup",
    help="Find, stop and undo stuck GitLab container-registry deletions (the DIGEST_INVALID loop).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_show_version, is_eager=True,
                                          help="Show glcleanup's version and exit.")] = False,
) -> None:
    """Find, stop and undo stuck GitLab container-registry deletions (the DIGEST_INVALID loop).

    Exit codes: 0 done/nothing stuck, 1 trouble found, 2 usage or input error, 3 environment error,
    130 interrupted.
    """


COMMANDS = (cmd_scan, cmd_stop_loop, cmd_requeue, cmd_undo, cmd_stub, cmd_logs, cmd_doctor, cmd_check, cmd_config,
            cmd_lab, cmd_demo, cmd_version)
for _module in COMMANDS:
    _module.register(app)


def main() -> None:
    """The `glcleanup` console script."""
    app()
