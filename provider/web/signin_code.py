"""The public sign-in code page: ``GET /signin-code`` (a form), ``POST /signin-code`` (a code is sent).

A small Flask app mounted by :class:`provider.app.ProviderApplication` only when
``ST_PROVIDER_OTP`` is on (otherwise ``/signin-code`` is 404). It reuses the console's
security headers, its HTTPS-aware signed cookie session and its CSRF token and check
(:mod:`provider.web.console.app`): every ``POST`` without the session's token is 403.
The session cookie (``st_signin``: ``HttpOnly``, ``SameSite=Strict``, path
``/signin-code``) holds nothing but that token. No script; Jinja2 autoescapes.

``POST`` always answers :data:`NEUTRAL` with the same status, headers and body, whether
the address is known, unknown, refused, over a limit or malformed
(:meth:`~provider.comms.signin_delivery.SignInCodeRequests.request` does the work and
says what happened only to the log), and never sooner than ``min_seconds`` after the
request arrived, so neither the page nor its timing tells who exists. The code's
delivery is stored before that wait: the wait delays the page, not the code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Response, abort, g, render_template, request

from provider.client_address import IPNetwork, client_address
from provider.comms.signin_delivery import SignInCodeRequests
from provider.web.console.app import (
    CSRF_FIELD,
    SECURITY_HEADERS,
    HttpsAwareSessions,
    came_over_https,
    csrf_token,
    csrf_valid,
)

PATH = "/signin-code"
COOKIE_NAME = "st_signin"
NEUTRAL = "If this address is known, a code is on its way."
#: The least time a POST takes (seconds): longer than finding a customer and storing a code.
MIN_SECONDS = 0.5
MAX_ADDRESS_LENGTH = 320


def build_signin_app(
    requests: SignInCodeRequests,
    *,
    secret: str,
    trusted_proxies: tuple[IPNetwork, ...] = (),
    min_seconds: float = MIN_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Flask:
    """The page's WSGI application (mounted at :data:`PATH`), signing its session with ``secret``."""
    app = Flask("provider.web.signin_code", template_folder=str(Path(__file__).parent / "templates"))
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH=PATH,
        MAX_CONTENT_LENGTH=16_384,
    )
    app.session_interface = HttpsAwareSessions()
    app.jinja_env.globals.update(csrf_token=csrf_token, csrf_field=CSRF_FIELD)
    minutes = max(1, round(requests.settings.ttl_seconds / 60))

    @app.before_request
    def check_request() -> None:
        g.started = clock()
        g.https = came_over_https(request.environ, trusted_proxies)
        if request.method == "POST" and not csrf_valid():
            abort(403)

    @app.after_request
    def add_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS:
            response.headers[name] = value
        return response

    @app.get("/")
    def form() -> str:
        return render_template("signin/page.html", sent=False, action=PATH, neutral=NEUTRAL, minutes=minutes)

    @app.post("/")
    def send() -> str:
        typed = request.form.get("address", "")[:MAX_ADDRESS_LENGTH]
        requests.request(typed, client_address(request.environ, trusted_proxies))
        page = render_template("signin/page.html", sent=True, action=PATH, neutral=NEUTRAL, minutes=minutes)
        remaining = min_seconds - (clock() - g.started)
        if remaining > 0:
            sleep(remaining)
        return page

    return app
