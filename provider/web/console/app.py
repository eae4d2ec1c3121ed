"""The console's Flask application: sessions, CSRF, roles, security headers, the page registry.

Mounted under ``/admin`` by :class:`provider.app.ProviderApplication` (which shifts the path
into ``SCRIPT_NAME``), so the SOAP path never enters Flask. The session lives in a cookie
signed by itsdangerous (Flask's own session) with ``ST_PROVIDER_SESSION_SECRET``: ``HttpOnly``,
``SameSite=Strict``, path ``/admin/``, ``Secure`` when the request came over HTTPS (its own
scheme, or ``X-Forwarded-Proto: https`` from a peer in ``ST_PROVIDER_TRUSTED_PROXIES``). A
session not used for ``ST_PROVIDER_SESSION_IDLE_MINUTES`` is dropped (the clock is injected).

Every ``POST`` needs the session's CSRF token in the form field ``csrf_token`` (else 403,
before the view runs); views that change things are wrapped in :func:`admin_only` (viewers
get 403). Pages are added in one place: :data:`provider.web.console.pages.PAGES` (the nav)
and their blueprint routes. Every answer carries the console's security headers.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, Response, abort, flash, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from provider.client_address import IPNetwork, is_trusted, parse_address
from provider.web.console.services import ConsoleServices
from provider.web.console.signin import ConsoleUser

log = logging.getLogger("provider.web.console")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
)
COOKIE_NAME = "st_console"
CSRF_FIELD = "csrf_token"

F = TypeVar("F", bound=Callable[..., Any])


class HttpsAwareSessions(SecureCookieSessionInterface):
    """Flask's signed cookie session, ``Secure`` exactly when this request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(getattr(g, "https", False))


def came_over_https(environ: dict[str, Any], trusted: tuple[IPNetwork, ...]) -> bool:
    """The request's own scheme, or ``X-Forwarded-Proto`` when the peer is a trusted proxy."""
    if str(environ.get("wsgi.url_scheme", "http")).lower() == "https":
        return True
    peer = parse_address(str(environ.get("REMOTE_ADDR") or ""))
    forwarded = str(environ.get("HTTP_X_FORWARDED_PROTO") or "").split(",")[0].strip().lower()
    return peer is not None and is_trusted(peer, trusted) and forwarded == "https"


def current_user() -> ConsoleUser | None:
    """The signed-in user of this request (set by the session check), else ``None``."""
    return cast("ConsoleUser | None", g.get("user"))


def admin_only(view: F) -> F:
    """Let only admins run ``view`` (403 for viewers; the session check already required a user)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if user is None or not user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return cast("F", wrapper)


def csrf_token() -> str:
    """The session's CSRF token (made on first use; the session cookie carries it)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


_PUBLIC_ENDPOINTS = frozenset({"console.sign_in", "static"})


def build_console(
    services: ConsoleServices,
    *,
    secret: str,
    idle_seconds: float,
    trusted_proxies: tuple[IPNetwork, ...] = (),
) -> Flask:
    """The console WSGI application over ``services``, signing sessions with ``secret``."""
    from provider.web.console import (  # the modules that add routes to the blueprint
        delivery_views,  # noqa: F401
        directory_views,  # noqa: F401
        rules_views,  # noqa: F401
        template_views,  # noqa: F401
        test_call_views,  # noqa: F401
    )
    from provider.web.console.views import blueprint  # the views import this module's helpers

    app = Flask(
        "provider.web.console",
        static_folder=str(services.static_folder),
        static_url_path="/static",
        template_folder=str(services.template_folder),
    )
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/admin/",
        SESSION_REFRESH_EACH_REQUEST=True,
        MAX_CONTENT_LENGTH=1_048_576,
    )
    app.config["TRUSTED_PROXIES"] = trusted_proxies
    app.session_interface = HttpsAwareSessions()
    app.extensions["console_services"] = services
    app.jinja_env.globals.update(csrf_token=csrf_token, current_user=current_user, csrf_field=CSRF_FIELD)
    app.jinja_env.filters["age"] = age_text
    app.register_blueprint(blueprint)

    @app.before_request
    def check_request() -> Response | None:
        g.https = came_over_https(request.environ, trusted_proxies)
        if request.method == "POST" and not csrf_valid():
            abort(403)
        g.user = _session_user(services, idle_seconds)
        if g.user is None and request.endpoint not in _PUBLIC_ENDPOINTS:
            return cast(Response, redirect(url_for("console.sign_in")))
        return None

    @app.after_request
    def add_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS:
            response.headers[name] = value
        return response

    return app


def age_text(seconds: float) -> str:
    """``42 seconds``, ``5 minutes``, ``3 hours``, ``2 days`` (whole units, rounded down)."""
    value = int(max(0.0, seconds))
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if value >= 2 * size:
            return f"{value // size} {unit}s"
    return f"{value} second" + ("" if value == 1 else "s")


def csrf_valid() -> bool:
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD, "")
    return isinstance(expected, str) and hmac.compare_digest(expected.encode(), given.encode())


def _session_user(services: ConsoleServices, idle_seconds: float) -> ConsoleUser | None:
    """The session's user as of now; ``None`` (and the session dropped) when it has been idle
    too long or the user lost console access."""
    name, role, source, seen = (session.get(k) for k in ("user", "role", "source", "seen"))
    if not all(isinstance(v, str) for v in (name, role, source)) or not isinstance(seen, int | float):
        return None
    now = services.clock()
    if now - seen > idle_seconds:
        session.clear()
        flash("Your session ended after a time without use. Sign in again.")
        log.info("console session expired", extra={"event": "console.session_expired", "user": name})
        return None
    user = services.sign_in.current(ConsoleUser(str(name), str(role), str(source)))
    if user is None:
        session.clear()
        log.info("console access withdrawn", extra={"event": "console.access_withdrawn", "user": name})
        return None
    session.update(seen=now, role=user.role)
    return user


def start_session(user: ConsoleUser, now: float) -> None:
    """A fresh session for ``user`` (a new CSRF token: nothing from before sign-in is kept)."""
    session.clear()
    session.update(user=user.name, role=user.role, source=user.source, seen=now)
    csrf_token()
