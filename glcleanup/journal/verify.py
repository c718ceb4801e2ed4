"""A journal is data from disk, never trusted: read it boundedly, check its digest and its shape.

`undo` hands a journal's rows to Ruby that writes them into GitLab's database as root, so a file
that anyone could have edited must prove three things before anything runs:

* it is a regular file of a sane size (a FIFO would hang, `/dev/zero` would eat all memory);
* it carries the keyed digest glcleanup wrote with it (HMAC-SHA256, key in the state dir, 0600):
  an edited journal is refused and said to be edited;
* every field has the type and the shape stop-loop writes (ids are integers, actions are known,
  rows belong to the journal's changes): anything else is exit 2, not a traceback.

undo.rb checks again, against the database, what only the database can tell (the rows' project).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from glcleanup.errors import JournalError, JournalTampered, UsageError
from glcleanup.paths import journal_key_path

MAX_JOURNAL_BYTES = 16 * 1024 * 1024  # thousands of rows fit in well under 1 MiB
DIGEST_KEY = "digest"
DIGEST_PREFIX = "hmac-sha256:"
# What stop-loop (done, failed, finish) and requeue journal; undo.rb knows how to put back exactly these.
KNOWN_ACTIONS = ("destroy", "park", "reset_cleanup", "requeue")
_ROW_LISTS = ("rows", "after", "policies", "policies_after")
_STRINGS = ("command", "created_at", "state", "rails_host", "rails_runner", "project_path", "mode",
            "gitlab_version", "applied_at", "finished_at", "undone_at", "checked_at", "error")


def read_bounded(path: Path, limit: int = MAX_JOURNAL_BYTES) -> bytes:
    """The bytes of a regular file no bigger than `limit`; anything else is refused before reading."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path} is not a regular file (a journal is a plain JSON file): refused, nothing read")
        if info.st_size > limit:
            raise UsageError(f"{path} is {info.st_size} bytes, more than a journal can be ({limit}): refused")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UsageError(f"{path} grew past {limit} bytes while being read: refused")
        return b"".join(chunks)
    finally:
        os.close(fd)


# --- the keyed digest --------------------------------------------------------------------------------

def _key(create: bool) -> bytes:
    """The signing key: created once (0600, O_EXCL); refused when anyone else could read or swap it."""
    path = journal_key_path()
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
    try:
        info = os.lstat(path)
    except FileNotFoundError as exc:
        raise UsageError(f"no journal key at {path}: this journal cannot be verified (was the state dir "
                         "replaced?); refused, nothing changed") from exc
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise JournalError(f"the journal key {path} must be a regular file owned by you with mode 0600: "
                           "refused, nothing changed")
    text = read_bounded(path, 4096).decode("ascii", "replace").strip()
    if len(text) < 32:
        raise JournalError(f"the journal key {path} is damaged: refused, nothing changed")
    return text.encode()


def _canonical(data: dict[str, Any]) -> bytes:
    body = {k: v for k, v in data.items() if k != DIGEST_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(data: dict[str, Any]) -> str:
    """The digest to store with `data` (creates the key on first use)."""
    return DIGEST_PREFIX + hmac.new(_key(create=True), _canonical(data), hashlib.sha256).hexdigest()


def check_digest(data: dict[str, Any], path: Path) -> None:
    """Refuse (exit 2) a journal without its digest or whose content no longer matches it."""
    recorded = data.get(DIGEST_KEY)
    if not isinstance(recorded, str) or not recorded.startswith(DIGEST_PREFIX):
        raise JournalTampered(f"{path} has no glcleanup digest: it was not written by this glcleanup (or was edited); "
                         "refused, nothing changed")
    expected = DIGEST_PREFIX + hmac.new(_key(create=False), _canonical(data), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(recorded, expected):
        raise JournalTampered(f"{path} was EDITED after glcleanup wrote it (its digest does not match): refused, "
                         "nothing changed")


# --- the shape ----------------------------------------------------------------------------------------

def _bad(path: Path, what: str) -> UsageError:
    return UsageError(f"{path}: {what}; refused, nothing changed")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


def check_shape(data: dict[str, Any], path: Path) -> None:
    """Every field stop-loop writes has its type; rows and policies belong to the journal's changes."""
    for key in _STRINGS:
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise _bad(path, f"field {key!r} must be a string")
    project = data.get("project")
    if project is not None and (not isinstance(project, dict) or not isinstance(project.get("full_path"), str) \
                or ("id" in project and not _is_id(project["id"])) or (data.get("changes") and "id" not in project)):
        raise _bad(path, "field 'project' must be {\"id\": <positive integer>, \"full_path\": <string>}")
    changes = data.get("changes")
    if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
        raise _bad(path, "field 'changes' must be a list of objects")
    for change in changes:
        if not _is_id(change.get("id")):
            raise _bad(path, f"a change has a non-integer id: {str(change.get('id'))[:40]!r}")
        if change.get("action") not in KNOWN_ACTIONS:
            raise _bad(path, f"change {change['id']} has an unknown action {str(change.get('action'))[:40]!r} "
                             f"(known: {', '.join(KNOWN_ACTIONS)})")
    for key in ("columns", "policy_columns"):
        value = data.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(c, str) for c in value)):
            raise _bad(path, f"field {key!r} must be a list of column names")
    changed = {c["id"] for c in changes}
    for key in _ROW_LISTS:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise _bad(path, f"field {key!r} must be a list of row objects")
        if key in ("rows", "after"):
            for row in value:
                if not _is_id(row.get("id")) or row["id"] not in changed:
                    raise _bad(path, f"{key} holds row {str(row.get('id'))[:40]!r}, which no change of this "
                                     "journal names")
        elif len(value) > 1:
            raise _bad(path, f"{key} holds {len(value)} cleanup policies; a journal has at most its project's")
    for key in ("rows", "after", "policies", "policies_after"):
        for row in data.get(key, []):
            for column, cell in row.items():
                if isinstance(cell, dict | list):
                    raise _bad(path, f"{key}: column {column[:40]!r} holds a nested value")
    if changes and not isinstance(project, dict):
        raise _bad(path, "it changes rows but names no project")


__all__ = ["KNOWN_ACTIONS", "MAX_JOURNAL_BYTES", "check_digest", "check_shape", "read_bounded", "sign"]
