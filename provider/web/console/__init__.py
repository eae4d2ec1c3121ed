"""The admin console under ``/admin/`` (issue 12): Flask, mounted beside the SOAP app.

:func:`build_console_app` builds it for a serving process; see :mod:`.app` for sessions,
CSRF, roles and headers, :mod:`.pages` for the navigation and :mod:`.views` for the pages.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from provider.settings import Settings

if TYPE_CHECKING:  # Flask is imported only when a console is built (session_secret needs none of it)
    from flask import Flask

    from provider.db.session import Database
    from provider.domain import Authenticator

log = logging.getLogger("provider.web.console")


def session_secret(settings: Settings) -> str:
    """``ST_PROVIDER_SESSION_SECRET``, or a new random one (logged: sessions end with the process)."""
    if settings.console.session_secret:
        return settings.console.session_secret.reveal()
    log.warning(
        "no ST_PROVIDER_SESSION_SECRET: console sessions are signed with a key generated for this start "
        "and end when it stops",
        extra={"event": "console.session_secret_generated"},
    )
    return secrets.token_urlsafe(32)


def build_console_app(
    settings: Settings,
    database: Database,
    *,
    directory: Authenticator | None,
    readiness: Mapping[str, Callable[[], bool]],
) -> Flask:
    """The console for ``settings`` (which must have it enabled)."""
    from provider.web.console.app import build_console
    from provider.web.console.services import ConsoleServices
    from provider.web.console.signin import ConsoleSignIn

    services = ConsoleServices(
        database=database,
        sign_in=ConsoleSignIn.from_settings(settings, database, directory),
        readiness=readiness,
        settings=settings,
        authenticator=directory,
    )
    return build_console(
        services,
        secret=session_secret(settings),
        idle_seconds=settings.console.session_idle_minutes * 60,
        trusted_proxies=settings.trusted_proxies,
    )
