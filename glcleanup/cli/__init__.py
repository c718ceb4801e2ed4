"""Typer app: parses options, calls core functions, renders tables or JSON. No logic here."""

from __future__ import annotations

import importlib
import pkgutil

import typer

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


# Each module in this package registers its commands on `app` when imported.
for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_")):
    importlib.import_module(f"{__name__}.{_mod}")


def main() -> None:
    app()
