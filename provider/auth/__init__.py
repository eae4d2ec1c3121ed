"""Authenticators: who may log in through SmarterTrack's portal.

:func:`build_authenticator` picks the configured one (``ST_PROVIDER_AUTH``):

* ``ldap`` (the default when ``ST_PROVIDER_LDAP_URL`` is set): :mod:`provider.auth.ldap`;
* ``local``: users in the provider's database (:mod:`provider.auth.local`);
* ``none``: no authenticator, every login fails (but a sign-in code when ``ST_PROVIDER_OTP`` is on).

Both real authenticators sit behind the brute-force throttle (:mod:`provider.auth.throttle`).
Logins (Authenticate, GetSignInCookieInfo) always ask the authenticator itself, so a
disabled account is refused at once; :func:`build_user_lookup` adds the short-lived lookup
cache (:mod:`provider.auth.cache`) used for the rules context of the other operations.
Nothing connects to a directory until the first call, so building one before gunicorn
forks its workers is safe.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from provider.auth.cache import CachingAuthenticator
from provider.auth.codes import CodeAuthenticator
from provider.auth.local import LocalAuthenticator
from provider.auth.throttle import Throttle, ThrottledAuthenticator
from provider.db.session import Database
from provider.domain import Authenticator, SignInCodeVerifier, UserLookup
from provider.errors import DirectoryUnavailable
from provider.settings import Settings


def build_authenticator(
    settings: Settings, database: Database, *, codes: SignInCodeVerifier | None = None
) -> Authenticator | None:
    """The authenticator for ``settings.auth``; ``None`` for ``none`` (every login fails).

    With ``codes`` (``ST_PROVIDER_OTP`` on) one-time sign-in codes are accepted too, behind
    the same throttle (:mod:`provider.auth.codes`), also when ``settings.auth`` is ``none``.
    Raises ConfigError for an unusable LDAP configuration (a bad URL, a missing CA file).
    """
    inner: Authenticator | None = None
    backend = settings.auth
    if settings.auth == "ldap" and settings.ldap is not None:
        from provider.auth.ldap import LdapAuthenticator  # ldap3: only where a directory is configured

        inner = LdapAuthenticator(settings.ldap)
    elif settings.auth != "none":
        inner, backend = LocalAuthenticator(database), "local"
    if codes is not None:
        inner = CodeAuthenticator(codes, settings.otp, inner)
    if inner is None:
        return None
    return ThrottledAuthenticator(inner, Throttle(database, settings.throttle), backend=backend)


#: How long a local user's lookup is reused for the rules context (the directory's is configurable).
LOCAL_LOOKUP_TTL = 5.0


def build_user_lookup(settings: Settings, authenticator: Authenticator | None) -> UserLookup | None:
    """Cached lookups of ``authenticator`` for the rules context of non-login operations.

    Entries live ``ST_PROVIDER_LDAP_CACHE_TTL`` seconds for LDAP, :data:`LOCAL_LOOKUP_TTL`
    for local users; SmarterTrack's repeated calls for one submission then cost one lookup.
    """
    if authenticator is None:
        return None
    ttl = settings.ldap.cache_ttl if settings.auth == "ldap" and settings.ldap else LOCAL_LOOKUP_TTL
    return CachingAuthenticator(authenticator, ttl=ttl)


def directory_probe(authenticator: Authenticator | None) -> Callable[[], bool] | None:
    """A readiness check for the directory behind ``authenticator`` (``None`` without LDAP).

    The check reads the root DSE on a service connection (failing over like any lookup)
    and answers whether some server did so within the timeout; it never raises.
    """
    ldap = sys.modules.get("provider.auth.ldap")  # not imported: no LDAP authenticator exists
    if ldap is None:
        return None
    inner = authenticator
    while inner is not None and not isinstance(inner, ldap.LdapAuthenticator):
        inner = getattr(inner, "inner", None)
    if inner is None:
        return None
    pool = inner.pool

    def probe() -> bool:
        try:
            pool.with_service(lambda session: session.read("", ("supportedLDAPVersion",)))
        except DirectoryUnavailable:
            return False
        return True

    return probe
