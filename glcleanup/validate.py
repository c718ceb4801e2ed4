"""Input validation against GitLab's own path rules, before anything is contacted.

GitLab's `Gitlab::PathRegex`: a namespace or project path segment starts with a letter,
digit or underscore, continues with letters, digits, `_`, `-` and `.`, must not end in
`.git` or `.atom`, and must not contain `..` or start/end with a special character.
We validate strictly (ASCII only) so unicode look-alikes are refused, not normalised.
"""

from __future__ import annotations

import re

from glcleanup.errors import UsageError

MAX_FULL_PATH = 255
_SEGMENT = re.compile(r"\A[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_\-])?\Z")


def project_path(value: str) -> str:
    """Return a valid `group/sub/project` full path, or raise UsageError (exit 2)."""
    if not isinstance(value, str) or not value:
        raise UsageError("project path is empty")
    shown = value.encode("unicode_escape").decode("ascii")[:80]
    if len(value) > MAX_FULL_PATH:
        raise UsageError(f"project path is longer than {MAX_FULL_PATH} characters: {shown}...")
    if not value.isascii():
        raise UsageError(f"project path has non-ASCII characters (look-alikes are refused): {shown}")
    segments = value.split("/")
    if len(segments) < 2:
        raise UsageError(f"project path must be NAMESPACE/PROJECT, got: {shown}")
    for seg in segments:
        if ".." in seg or not _SEGMENT.match(seg) or seg.endswith((".git", ".atom")):
            raise UsageError(f"not a valid GitLab project path: {shown}")
    return value


def group_path(value: str) -> str:
    """Like project_path, but a single top-level segment is allowed."""
    if value and len(value) <= MAX_FULL_PATH and "/" not in value and value.isascii() and _SEGMENT.match(value) \
            and ".." not in value and not value.endswith((".git", ".atom")):
        return value
    return project_path(value)


def repository_id(value: str | int) -> int:
    """A container repository id: a positive integer, nothing else."""
    text = str(value)
    if not text.isdigit() or not text.isascii() or len(text) > 18 or int(text) <= 0:
        raise UsageError(f"repository id must be a positive integer, got: {text[:40]!r}")
    return int(text)


def http_url(value: str, option: str) -> str:
    """An http(s) base URL with a host, or a UsageError naming the option and the fix (exit 2).

    Without this, `--url 127.0.0.1:8080` reaches requests as a path and fails deep inside with
    `InvalidSchema`; the admin needs one line saying the scheme is missing.
    """
    from urllib.parse import urlsplit

    text = value.strip()
    shown = text.encode("unicode_escape").decode("ascii")[:120]
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise UsageError(f"{option} {shown}: not a valid URL ({exc})") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        hint = f"; add the scheme, e.g. https://{shown}" if "://" not in text else ""
        raise UsageError(f"{option} {shown}: not an http(s) URL{hint}")
    if any(ch.isspace() for ch in text) or port == 0:
        raise UsageError(f"{option} {shown}: not a valid URL")
    return value
