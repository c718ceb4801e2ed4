"""`glcleanup version`."""

import typer

from glcleanup import __version__
from glcleanup.cli import app


@app.command("version")
def version() -> None:
    """Print glcleanup's version."""
    typer.echo(__version__)
