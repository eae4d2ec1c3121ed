"""Authenticators: who may log in through SmarterTrack's portal.

:func:`build_authenticator` picks the configured one (``ST_PROVIDER_AUTH``).
"""

from __future__ import annotations

from provider.db.session import Database
from provider.domain import Authenticator
from provider.settings import Settings


def build_authenticator(settings: Settings, database: Database) -> Authenticator | None:
    """The authenticator for ``settings.auth``; ``None`` for ``none`` (every login fails)."""
    return None
