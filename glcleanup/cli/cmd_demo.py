"""`glcleanup demo`: the incident and its cure in a local lab, no configuration needed."""

from __future__ import annotations

from typing import Annotated

import typer

from glcleanup.cli.options import plain_command
from glcleanup.cli.output import emit_table
from glcleanup.lab.demo import DEMO_VERSION, run_demo


def demo(
    version: Annotated[str, typer.Option("--version", help="GitLab version the lab simulates.")] = DEMO_VERSION,
) -> None:
    """Run the whole story in a throwaway local lab (127.0.0.1 only) and tear it down."""
    run_demo(typer.echo, version=version, table=lambda rows, columns: emit_table(rows, columns))


def register(app: typer.Typer) -> None:
    plain_command(app, "demo")(demo)
