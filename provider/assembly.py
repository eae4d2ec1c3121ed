"""Builds the domain :class:`~provider.calls.Provider` from settings (one per process), and the
sign-in code requests of ``/signin-code`` when ``ST_PROVIDER_OTP`` is on."""

from __future__ import annotations

from provider.auth import build_authenticator, build_user_lookup
from provider.calls import Provider
from provider.comms.signin_codes import SignInCodes
from provider.comms.signin_delivery import SignInCodeRequests, address_finders
from provider.db.session import Database
from provider.domain import Authenticator
from provider.events import build_sink
from provider.metrics import PREVIOUS_PASSWORD_CALLS
from provider.rules.evaluator import build_evaluator
from provider.rules.limits import RuleLimits
from provider.settings import Settings


def build_provider(settings: Settings, database: Database) -> Provider:
    """Wire the configured authenticator, user lookup, rules and event sink into a Provider
    (and the previous-password metric). With ``ST_PROVIDER_OTP`` on, Authenticate also
    accepts one-time sign-in codes (:mod:`provider.auth.codes`).

    Raises ConfigError when the Web Service Password is not set.
    """
    password = settings.require_password()
    codes = SignInCodes(database, settings.otp) if settings.otp.enabled else None
    authenticator = build_authenticator(settings, database, codes=codes)
    return Provider(
        password,
        previous_password=settings.previous_web_service_password,
        authenticator=authenticator,
        user_lookup=build_user_lookup(settings, authenticator),
        rules=build_evaluator(settings, database),
        events=build_sink(settings, database),
        on_previous_password=PREVIOUS_PASSWORD_CALLS.inc,
    )


def build_signin_requests(
    settings: Settings, database: Database, authenticator: Authenticator | None
) -> SignInCodeRequests | None:
    """What ``/signin-code`` asks (``None`` when ``ST_PROVIDER_OTP`` is off): customers are
    found by the user backends inside ``authenticator`` (local users, the directory) and the
    rules' ``RequestSignInCode``."""
    if not settings.otp.enabled:
        return None
    return SignInCodeRequests(
        database,
        SignInCodes(database, settings.otp),
        finders=address_finders(authenticator),
        rules=build_evaluator(settings, database),
        read_only_vars=settings.read_only_vars,
        limits=RuleLimits(max_output=settings.rules_max_output, deadline_ms=settings.rules_deadline_ms),
    )
