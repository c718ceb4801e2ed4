"""Secrets: every form a token can take in a message, the token's own grammar, and the environment
children get (never a token). Kept free of other glcleanup imports so transports can use it."""

from __future__ import annotations

import os
import urllib.parse

from glcleanup.errors import UsageError

TOKEN_ENV_VARS = ("GITLAB_PRIVATE_TOKEN", "GITLAB_TOKEN")
# Never handed to a child process (runner, stop/start-registry commands): python-gitlab's names too.
SECRET_ENV_VARS = (*TOKEN_ENV_VARS, "GITLAB_OAUTH_TOKEN", "GITLAB_JOB_TOKEN", "CI_JOB_TOKEN")
MAX_TOKEN = 4096


def secret_forms(secret: str) -> set[str]:
    """Every way a secret can show up in a message: raw, stripped, as `repr` (str and bytes) escapes it,
    and URL-encoded (a token in a query string or a header dump)."""
    forms: set[str] = set()
    for base in {secret, secret.strip()}:
        forms |= {base, repr(base)[1:-1], repr(base.encode("utf-8", "replace"))[2:-1],
                  urllib.parse.quote(base, safe=""), urllib.parse.quote(base), urllib.parse.quote_plus(base),
                  base.encode("unicode_escape").decode("ascii")}
    return {f for f in forms if len(f) >= 4}


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every form of every secret replaced (longest first, so no fragment is left)."""
    forms: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= 4:
            forms |= secret_forms(secret)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "[REDACTED]")
    return text


def check_token(token: str, source: str) -> str:
    """A token is one printable word: a CRLF token file or a pasted newline is refused here, before it
    reaches an HTTP header (whose error message would print it). The message never shows the token."""
    if len(token) > MAX_TOKEN or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise UsageError(f"the token contains whitespace or control characters (from {source}); "
                         "remove them (e.g. a trailing CR from a Windows file)")
    return token


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for processes glcleanup starts: its own without any token variable."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k not in SECRET_ENV_VARS}
