"""`glcleanup config`: show the resolved settings and where the token came from (redacted)."""

from __future__ import annotations

import typer

from glcleanup.cli.options import command, json_mode
from glcleanup.cli.output import emit_json, emit_table
from glcleanup.settings import Settings


def config(settings: Settings) -> int:
    """Show the settings glcleanup would use (the token is never shown)."""
    doc = {
        "url": settings.url,
        "token": "set" if settings.token else None,
        "token_source": settings.token_source,
        "gitlab_section": settings.gitlab_section,
        "rails_host": settings.rails_host,
        "rails_runner": settings.rails_runner,
        "registry_host": settings.registry_host,
        "registry_url": settings.registry_url,
        "ssh_key": settings.ssh_key,
        "known_hosts": settings.known_hosts,
    }
    if json_mode(settings):
        emit_json(doc)
    else:
        emit_table([{"setting": k, "value": v} for k, v in doc.items()], ["setting", "value"])
    return 0


def register(app: typer.Typer) -> None:
    command(app, "config")(config)
