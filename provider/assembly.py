"""Builds the domain :class:`~provider.calls.Provider` from settings (one per process)."""

from __future__ import annotations

from provider.auth import build_authenticator, build_user_lookup
from provider.calls import Provider
from provider.db.session import Database
from provider.events import build_sink
from provider.metrics import PREVIOUS_PASSWORD_CALLS
from provider.rules import build_evaluator
from provider.settings import Settings


def build_provider(settings: Settings, database: Database) -> Provider:
    """Wire the configured authenticator, user lookup, rules and event sink into a Provider
    (and the previous-password metric).

    Raises ConfigError when the Web Service Password is not set.
    """
    password = settings.require_password()
    authenticator = build_authenticator(settings, database)
    return Provider(
        password,
        previous_password=settings.previous_web_service_password,
        authenticator=authenticator,
        user_lookup=build_user_lookup(settings, authenticator),
        rules=build_evaluator(settings, database),
        events=build_sink(settings, database),
        on_previous_password=PREVIOUS_PASSWORD_CALLS.inc,
    )
