"""One error tree and one exit-code table, mapped to exit codes only in the CLI.

Core modules raise these; `glcleanup.cli` prints one line and exits with `exit_code`.
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
    """An expected failure with a message meant for the admin."""

    exit_code: ExitCode = ExitCode.ENVIRONMENT


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
