"""The package's exceptions: one base class, turned into a one-line message by the CLI.

Every error a user can cause derives from `MailerError`. The CLI prints `str(error)` on one
line (plus the optional `hint`) and exits with `exit_code`; nothing else reaches the
terminal, so a marketer never sees a traceback.
"""

from __future__ import annotations

__all__ = [
    "MailerError",
    "ConfigError",
    "DatabaseError",
    "DatabaseBehind",
    "NotFound",
    "InvalidInput",
    "ImportFailed",
]


class MailerError(Exception):
    """Base class for every error a user can cause or fix."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(MailerError):
    """mailer.toml, the environment or a secrets file is missing or wrong."""


class DatabaseError(MailerError):
    """The database cannot be reached or used."""


class DatabaseBehind(DatabaseError):
    """The database schema is older than the code: `mailer db upgrade` fixes it."""


class NotFound(MailerError, LookupError):
    """A named list, subscriber or other record does not exist."""


class InvalidInput(MailerError, ValueError):
    """A value given by the user is not acceptable."""


class ImportFailed(MailerError):
    """A CSV import could not run; nothing was written."""
