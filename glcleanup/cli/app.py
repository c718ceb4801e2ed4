"""The Typer app and its explicit list of commands. Each `cmd_*` module registers its own."""

from __future__ import annotations

import typer

from glcleanup.cli import (
    cmd_check,
    cmd_config,
    cmd_demo,
    cmd_doctor,
    cmd_lab,
    cmd_logs,
    cmd_scan,
    cmd_stop_loop,
    cmd_stub,
    cmd_undo,
    cmd_version,
)

app = typer.Typer(
    name="glcleanup",
    help="Find, stop and undo stuck GitLab container-registry deletions (the DIGEST_INVALID loop).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Find, stop and undo stuck GitLab container-registry deletions (the DIGEST_INVALID loop).

    Exit codes: 0 done/nothing stuck, 1 trouble found, 2 usage or input error, 3 environment error.
    """


COMMANDS = (cmd_scan, cmd_stop_loop, cmd_undo, cmd_stub, cmd_logs, cmd_doctor, cmd_check, cmd_config, cmd_lab,
            cmd_demo, cmd_version)
for _module in COMMANDS:
    _module.register(app)


def main() -> None:
    app()
