"""`glcleanup demo`: the incident and its cure in a local lab, no configuration needed."""

from __future__ import annotations

from typing import Annotated

import typer

from glcleanup.cli import app
from glcleanup.errors import GlcleanupError
from glcleanup.lab.demo import DEMO_VERSION, run_demo


@app.command("demo")
def demo(
    version: Annotated[str, typer.Option("--version", help="GitLab version the lab simulates.")] = DEMO_VERSION,
) -> None:
    """Run the whole story in a throwaway local lab (127.0.0.1 only) and tear it down."""
    try:
        run_demo(typer.echo, version=version)
    except GlcleanupError as exc:
        typer.echo(f"glcleanup: error: {exc}", err=True)
        raise typer.Exit(int(exc.exit_code)) from None
