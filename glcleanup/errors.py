"""Every exception glcleanup raises on purpose, and every exit code it knows, in one tree.

Core modules raise these; `glcleanup.cli.output.handle_errors` prints one line and exits with
`exit_code`. The bundled `stub/stubctl.sh` answers with its own codes (`StubctlExit`).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """design.md §5: stable for cron and monitoring."""

    OK = 0
    TROUBLE = 1  # the command ran and found trouble (stuck, looping, not stopped, check failed)
    USAGE = 2  # bad option or input: nothing was touched
    ENVIRONMENT = 3  # cannot connect, auth refused, host key refused, not found, runner failed


class GlcleanupError(Exception):
    """An expected failure with a message meant for the admin (one line), and optional details the
    CLI prints after it (e.g. a journal that could not be saved)."""

    exit_code: ExitCode = ExitCode.ENVIRONMENT
    details: str | None = None


class StubctlExit(IntEnum):
    """Exit codes of the bundled `stub/stubctl.sh` (its header documents the same table)."""

    OK = 0
    USAGE = 64
    STUB_WOULD_NOT_STOP = 70
    START_REGISTRY_FAILED = 71
    NGINX_MISSING = 72
    CONFIG_CHECK_FAILED = 73
    START_FAILED = 74
    BUSY = 75
    NOT_ON = 76


class UsageError(GlcleanupError):
    """Bad input: raised before anything is contacted or changed."""

    exit_code = ExitCode.USAGE


class ConfigError(GlcleanupError):
    """Settings are missing or contradictory (no URL, no token, unreadable config file)."""


class ConnectError(GlcleanupError):
    """A host or URL could not be reached."""


class HostKeyError(GlcleanupError):
    """An SSH host key is unknown or changed: refused, never auto-accepted."""


class AuthError(GlcleanupError):
    """Credentials were refused (SSH key, API token)."""


class Forbidden(AuthError):
    """403: the token may not read this (for a project's repositories: its registry is disabled)."""


class NotFoundError(GlcleanupError):
    """A project, repository or journal does not exist."""


class RunnerError(GlcleanupError):
    """`gitlab-rails runner` failed: boot error, Ruby exception, no result."""


class ApiError(GlcleanupError):
    """The GitLab API answered with an error we cannot work around."""


class StubError(GlcleanupError):
    """The registry stub could not be put up, verified or taken down."""


class LockedError(GlcleanupError):
    """Another glcleanup run holds the lock for the same target."""


class JournalError(GlcleanupError):
    """The journal could not be written or read."""


class CheckFailed(GlcleanupError):
    """A doctor check ran and the answer is no."""


class LabError(GlcleanupError):
    """The lab could not be started, found or stopped."""


# Signals inside one module's flow, never shown to the admin as such.


class CheckSkipped(Exception):
    """A doctor check's setting is not configured: reported as skipped, not failed."""


class GraphQLUnavailable(Exception):
    """GraphQL answered an error, lacked a field, or failed over HTTP: the API scan uses REST instead."""
