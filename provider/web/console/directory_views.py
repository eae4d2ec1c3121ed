"""The console's **Directory** page: ``st-provider ldap check`` as Keycloak's two buttons.

* **Test connection** connects to every configured server (reachable, TLS, service bind):
  :func:`provider.auth.ldap_check.check_connection`, the function ``ldap check`` prints.
* **Test authentication** takes a username and a password and shows where the user is found,
  the bind result, attributes, groups and the required group, with the precise reason for the
  admin: :func:`provider.auth.ldap_check.check_user`.

Admins only (viewers get 403: the page can try passwords). Both are CSRF-checked ``POST``
requests; the password test goes through the brute-force throttle of sign-ins
(:class:`~provider.auth.throttle.ThrottledAuthenticator`, keyed by the tested username and the
admin's address), so the page cannot be used to guess passwords. The password is only handed to
the authenticator: never rendered back, stored in the session, or logged. Each pool of
connections lives for one request and is closed after it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import current_app, request

from provider.auth.ldap import LdapAuthenticator
from provider.auth.ldap_check import (
    ACCEPTED,
    CONNECTION_HINT,
    ConnectionCheck,
    UserCheck,
    check_connection,
    check_user,
)
from provider.auth.ldap_pool import LdapPool
from provider.auth.throttle import Throttle, ThrottledAuthenticator
from provider.client_address import client_address
from provider.errors import ConfigError
from provider.settings import LdapSettings, Settings
from provider.web.console.app import admin_only, current_user
from provider.web.console.views import _page, _services, blueprint

log = logging.getLogger("provider.web.console")

TITLE = "Directory"
MAX_USERNAME = 255


def _settings() -> Settings:
    settings = _services().settings
    assert settings is not None, "the console was built without settings"
    return settings


@contextmanager
def _pool(ldap: LdapSettings) -> Iterator[LdapPool]:
    """A pool of fresh connections for one request, closed after it."""
    pool = LdapPool(ldap)
    try:
        yield pool
    finally:
        pool.close()


@blueprint.route("/directory")
def directory() -> Any:
    """The two buttons, and what is configured (no secret); viewers get 403 with the reason."""
    user = current_user()
    if user is None or not user.is_admin:
        message = "Only admins may use the Directory page: it can try passwords."
        return _page("error.html", TITLE, message=message), 403
    return _render()


@blueprint.route("/directory/connection", methods=["POST"])
@admin_only
def directory_connection() -> Any:
    """Test connection: each configured server, with fresh connections."""
    ldap = _settings().ldap
    if ldap is None:
        return _render()
    try:
        with _pool(ldap) as pool:
            connection = check_connection(pool)
    except ConfigError as exc:
        return _render(problem=str(exc)), 503
    _audit("connection", ok=connection.ok)
    return _render(connection=connection)


@blueprint.route("/directory/authentication", methods=["POST"])
@admin_only
def directory_authentication() -> Any:
    """Test authentication: look the username up, then check the password through the throttle."""
    settings = _settings()
    ldap = settings.ldap
    if ldap is None:
        return _render()
    username = request.form.get("username", "").strip()[:MAX_USERNAME]
    password = request.form.get("password", "")
    errors = {}
    if not username:
        errors["username"] = "Enter a username."
    if not password:
        errors["password"] = "Enter the password to test."  # noqa: S105 - a message
    if errors:
        return _render(username=username, errors=errors), 400
    client = client_address(request.environ, current_app.config["TRUSTED_PROXIES"])
    try:
        with _pool(ldap) as pool:
            authenticator = LdapAuthenticator(ldap, pool)
            verifier = ThrottledAuthenticator(
                authenticator, Throttle(_services().database, settings.throttle), backend="ldap"
            )
            checked = check_user(
                authenticator,
                username,
                password,
                required_group=ldap.require_group,
                verifier=verifier,
                client_address=client,
            )
    except ConfigError as exc:
        return _render(username=username, problem=str(exc)), 503
    outcome = checked.password.outcome if checked.password is not None else "unavailable"
    _audit("authentication", ok=checked.ok, username=username, outcome=outcome)
    return _render(username=username, user_check=checked)


def _audit(check: str, *, ok: bool, **fields: str) -> None:
    user = current_user()
    log.info(
        "console directory test",
        extra={
            "event": "console.directory_test",
            "actor": f"console:{user.name}" if user else None,
            "check": check,
            "ok": ok,
            **fields,
        },
    )


def _render(
    *,
    connection: ConnectionCheck | None = None,
    user_check: UserCheck | None = None,
    username: str = "",
    errors: dict[str, str] | None = None,
    problem: str | None = None,
) -> str:
    settings = _settings()
    return _page(
        "directory.html",
        TITLE,
        auth=settings.auth,
        ldap=settings.ldap,
        connection=connection,
        hint=CONNECTION_HINT,
        check=user_check,
        accepted=ACCEPTED,
        username=username,
        errors=errors or {},
        problem=problem,
    )
