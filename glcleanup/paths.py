"""Where glcleanup keeps its local state, decided once: `$XDG_STATE_HOME/glcleanup` (else
`~/.local/state/glcleanup`), with journals, locks, saved log evidence and the lab under it."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """glcleanup's local state: $XDG_STATE_HOME/glcleanup, else ~/.local/state/glcleanup."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(base) / "glcleanup"


def journal_dir() -> Path:
    """One JSON file per mutating run (stop-loop, undo)."""
    return state_dir() / "journal"


def lock_dir() -> Path:
    """One lock file per rails host and project."""
    return state_dir() / "locks"


def evidence_dir() -> Path:
    """Log summaries saved by `logs --truncate` before anything is emptied."""
    return state_dir() / "evidence"


def lab_dir() -> Path:
    """The local incident lab's default directory."""
    return state_dir() / "lab"
