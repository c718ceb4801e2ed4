"""Journals: every row stop-loop changes, in full, on local disk before the change lands.

One JSON file per run under `$XDG_STATE_HOME/glcleanup/journal/` (fallback
`~/.local/state/glcleanup/journal`). Every write goes to a temp file that is fsynced and
renamed over the journal, then the directory is fsynced: a crash leaves the old or the new
version, never a torn one. `undo` reads these files back; nothing sensitive goes in (rows
hold no secrets, the runner command is redacted by the caller).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from glcleanup.errors import GlcleanupError, JournalError, JournalTampered, NotFoundError, UsageError
from glcleanup.journal import verify
from glcleanup.paths import journal_dir

FORMAT = 1
# states a journal moves through; "recorded" means the transaction may or may not have committed
RECORDED, APPLIED, ROLLED_BACK, UNDONE = "recorded", "applied", "rolled_back", "undone"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, document: dict[str, Any]) -> None:
    """Temp file, fsync, rename, fsync the directory: the journal is on disk when this returns."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    data = (json.dumps(document, indent=1, sort_keys=False, default=str) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def ensure_writable() -> Path:
    """Create the journal directory (0700) and prove it takes a file, before the runner boots."""
    directory = journal_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = directory / f".probe-{secrets.token_hex(4)}"
        write_atomic(probe, {"probe": True})
        probe.unlink()
        verify.sign({})  # the journal key exists (0600) before anything changes
    except OSError as exc:
        raise JournalError(f"cannot write journals in {directory}: {exc}; nothing was changed") from exc
    return directory


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "journal"


@dataclass
class Journal:
    """One run's journal file and its content; `save()` after every change of `data`."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, command: str, project: str, meta: dict[str, Any]) -> Journal:
        """A fresh, not yet written journal with a sortable, unique file name."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{command}-{_slug(project)}-{secrets.token_hex(3)}.json"
        data = {"format": FORMAT, "command": command, "created_at": now_iso(), "state": RECORDED, **meta}
        return cls(journal_dir() / name, data)

    def save(self) -> None:
        """Write atomically, with the keyed digest that shows later whether anyone edited the file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.data[verify.DIGEST_KEY] = verify.sign(self.data)
            write_atomic(self.path, self.data)
        except OSError as exc:
            raise JournalError(f"cannot write journal {self.path}: {exc}") from exc

    @property
    def state(self) -> str:
        return str(self.data.get("state", RECORDED))

    def merge_rows(self, key: str, rows: list[dict[str, Any]]) -> None:
        """Replace rows in `data[key]` by id (the newest 'as we left it' wins)."""
        by_id = {r.get("id"): r for r in self.data.get(key, [])}
        by_id.update({r.get("id"): r for r in rows})
        self.data[key] = [by_id[k] for k in sorted(by_id, key=lambda v: (v is None, v))]

    @classmethod
    def load(cls, path: Path | str) -> Journal:
        """Read a journal as untrusted data: regular file, bounded size, its digest, its field types."""
        target = Path(path).expanduser()
        try:
            data = json.loads(verify.read_bounded(target))
        except FileNotFoundError as exc:
            raise NotFoundError(f"no journal at {target}") from exc
        except ValueError as exc:
            raise UsageError(f"{target} is not a glcleanup journal (not JSON: {str(exc)[:80]})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT or "changes" not in data:
            raise UsageError(f"{target} is not a glcleanup journal (format {FORMAT})")
        verify.check_digest(data, target)
        verify.check_shape(data, target)
        return cls(target, data)


def journals() -> list[Path]:
    """Every journal file, oldest first (names start with a UTC timestamp)."""
    directory = journal_dir()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if not p.name.startswith("."))


def latest_for_undo() -> Journal:
    """What `undo` with no argument means: the newest journal whose change was applied (or may have been:
    `recorded`, a run that broke before it heard back) and is not yet undone.

    Undone and rolled-back journals are skipped: picking an undone one only to refuse it was the bug.
    """
    for path in reversed(journals()):
        try:
            journal = Journal.load(path)
        except JournalTampered:
            raise  # an edited newest journal is said so, never silently passed over for an older one
        except GlcleanupError:
            continue
        if journal.state in (APPLIED, RECORDED):
            return journal
    raise NotFoundError(f"no applied, not yet undone journal in {journal_dir()} (`glcleanup undo --list` shows "
                        "them all)")


def list_journals() -> list[dict[str, Any]]:
    """Every journal, newest first, as `undo --list` shows them (unreadable files say so, never raise)."""
    entries: list[dict[str, Any]] = []
    for path in reversed(journals()):
        try:
            data = Journal.load(path).data
        except GlcleanupError as exc:
            entries.append({"time": None, "project": None, "mode": None, "state": "unreadable",
                            "journal": str(path), "error": str(exc)[:200]})
            continue
        project = data.get("project")
        entries.append({
            "time": data.get("created_at"),
            "project": (project.get("full_path") if isinstance(project, dict) else None) or data.get("project_path"),
            "mode": data.get("mode"),
            "state": str(data.get("state", RECORDED)),
            "rows": len(data.get("changes") or []),
            "journal": str(path),
        })
    return entries
