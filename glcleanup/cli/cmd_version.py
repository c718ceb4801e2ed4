"""`glcleanup version`."""

import typer

from glcleanup import __version__
from glcleanup.cli.options import plain_command


def version() -> None:
    """Print glcleanup's version."""
    typer.echo(__version__)


def register(app: typer.Typer) -> None:
    plain_command(app, "version")(version)
