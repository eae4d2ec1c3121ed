"""The one exception hierarchy of the provider.

Every failure the provider knows about is a :class:`ProviderError`. Third-party
errors (ldap3, httpx, zeep, SQLAlchemy, PyYAML, Jinja2) are converted at the
boundary with ``raise ... from exc`` so callers only ever catch these classes.
Messages are safe to show to a caller: they never contain secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ProviderError(Exception):
    """Root of every error the provider raises on purpose."""


class ConfigError(ProviderError):
    """The configuration is invalid; the message says which setting and why."""


class StorageError(ProviderError):
    """The database could not be reached or refused the operation."""


class DatabaseMissing(StorageError):
    """The configured database does not exist (and the command was not asked to create it)."""


class InvalidInput(ProviderError):
    """A caller's input variable is malformed; the message says which one and what it must be.

    ``variable`` is the input's name as documented (never its value).
    """

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(message)
        self.variable = variable


# --- directory / authentication -------------------------------------------------


class DirectoryError(ProviderError):
    """Base for directory (LDAP) failures."""


class DirectoryUnavailable(DirectoryError):
    """No directory server answered within the timeout. Callers report an outage."""


class AuthenticationFailed(ProviderError):
    """The credentials were not accepted (by the directory or the local user store alike).

    ``reason`` is for logs only (``bad_password``, ``unknown_user``, ``disabled``,
    ``locked``, ``expired``, ``not_in_group``, ``throttled``, ``empty_password`` ...);
    callers must show a neutral message.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- rules ----------------------------------------------------------------------


class RuleError(ProviderError):
    """Base for rule problems."""


@dataclass(frozen=True)
class RuleProblem:
    """One validation problem in a rules file."""

    message: str
    rule: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.rule:
            where.append(f"rule {self.rule!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class RulesFileError(RuleError):
    """A rules file is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid rules file")


class RuleNotFound(RuleError):
    """No rule has that name."""


class RuleLimitExceeded(RuleError):
    """A rule's evaluation hit a sandbox limit; ``limit`` names which.

    ``deadline``, ``value`` (a text too long), ``output`` (a rendered template too
    long), ``total`` (too much text built in one call), ``items``, ``integer`` or
    ``regex`` (a regular expression ran out of time).
    """

    def __init__(self, limit: str, message: str) -> None:
        self.limit = limit
        super().__init__(message)


class RuleVersionNotFound(RuleError):
    """No snapshot of that rule-set version is kept."""


class TemplateNotFound(RuleError):
    """No message template has that name."""


# --- events and channels --------------------------------------------------------


class EventRejected(ProviderError):
    """An event could not be stored; SmarterTrack must be told (Success=false)."""


class ChannelError(ProviderError):
    """A delivery attempt failed.

    ``final`` means retrying cannot help (400/403/404/413/422 and the like);
    ``retry_after`` is the partner's requested wait in seconds, if any;
    ``status`` is the HTTP status when there was one; ``pause_channel`` asks every
    worker to hold the whole channel (429/503).
    """

    def __init__(
        self,
        message: str,
        *,
        final: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        pause_channel: bool = False,
        partner_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.final = final
        self.status = status
        self.retry_after = retry_after
        self.pause_channel = pause_channel
        self.partner_code = partner_code


class DeliveryNotFound(ProviderError):
    """No delivery has that id."""


# --- call journal ----------------------------------------------------------------


class CallNotFound(ProviderError):
    """No journaled call has that id."""


class EventNotFound(ProviderError):
    """No event has that id."""
