"""The command line: parses, calls glcleanup.ops (and friends), renders. No decisions here."""

from __future__ import annotations

from glcleanup.cli.app import app, main

__all__ = ["app", "main"]
