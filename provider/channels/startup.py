"""Start-up check of the stored channels' ``${VAR}`` references (``st-provider serve``).

A channel whose settings reference a variable that is not set fails every delivery;
a reference that is not allowed (an ``ST_PROVIDER_*`` name, a name outside
``ST_PROVIDER_SECRET_VARS``, a field that takes none) is refused when the channel is
built. Both are logged as warnings when the service starts, naming the channel, so an
administrator learns it before the first event, not from a failed delivery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from provider.channels.config import ChannelStore
from provider.channels.registry import channel_missing_variables, validate_channel_settings
from provider.db.session import Database
from provider.errors import StorageError
from provider.settings import Settings

log = logging.getLogger("provider.channels.startup")


@dataclass(frozen=True)
class ChannelWarning:
    """One problem with a stored channel's references (``variable`` is None for a refused one)."""

    channel: str
    variable: str | None
    problem: str


def stored_channel_warnings(settings: Settings, database: Database) -> list[ChannelWarning]:
    """Every unset variable and refused reference of the stored channels (enabled or not)."""
    with database.session() as session:
        configs = ChannelStore.all(session)
    warnings: list[ChannelWarning] = []
    for config in configs:
        name, type_name, channel_settings = config.name, config.type, config.settings
        for problem in validate_channel_settings(
            type_name, channel_settings, secret_vars=settings.secret_vars
        ):
            if "${" in problem:
                warnings.append(ChannelWarning(name, None, problem))
        for var in channel_missing_variables(
            type_name, channel_settings, settings.environment, secret_vars=settings.secret_vars
        ):
            warnings.append(ChannelWarning(name, var, f"environment variable {var} is not set"))
    return warnings


def warn_about_channel_variables(settings: Settings) -> list[ChannelWarning]:
    """Log a warning per stored channel problem found by :func:`stored_channel_warnings`.

    Never raises for a database problem (``serve`` reports those itself); returns the warnings.
    """
    with Database(settings.database_url) as database:
        try:
            warnings = stored_channel_warnings(settings, database)
        except StorageError:
            return []
    for warning in warnings:
        log.warning(
            "channel %s: %s",
            warning.channel,
            warning.problem,
            extra={
                "event": "channels.variable_missing" if warning.variable else "channels.reference_refused",
                "channel": warning.channel,
                "variable": warning.variable,
            },
        )
    return warnings
