"""The command line: parses, calls glcleanup.ops (and friends), renders. No decisions here.

Importing typer, python-gitlab and paramiko takes a noticeable moment; a Ctrl-C in that moment must
print one line and exit 130, not an import traceback, so the import is guarded here, where the
console script's `from glcleanup.cli import main` lands first.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130

try:
    from glcleanup.cli.app import app, main
except KeyboardInterrupt:
    sys.stderr.write("glcleanup: interrupted\n")
    sys.exit(INTERRUPTED)

__all__ = ["app", "main"]
