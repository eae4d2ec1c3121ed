"""Authenticators: who may log in through SmarterTrack's portal.

:func:`build_authenticator` picks the configured one (``ST_PROVIDER_AUTH``):

* ``ldap`` (the default when ``ST_PROVIDER_LDAP_URL`` is set): :mod:`provider.auth.ldap`,
  with lookups cached for ``ST_PROVIDER_LDAP_CACHE_TTL`` seconds (:mod:`provider.auth.cache`);
* ``local``: users in the provider's database (:mod:`provider.auth.local`);
* ``none``: no authenticator, every login fails.

Both real authenticators sit behind the brute-force throttle (:mod:`provider.auth.throttle`).
Nothing connects to a directory until the first call, so building one before gunicorn
forks its workers is safe.
"""

from __future__ import annotations

from provider.auth.cache import CachingAuthenticator
from provider.auth.ldap import LdapAuthenticator
from provider.auth.local import LocalAuthenticator
from provider.auth.throttle import Throttle, ThrottledAuthenticator
from provider.db.session import Database
from provider.domain import Authenticator
from provider.settings import Settings


def build_authenticator(settings: Settings, database: Database) -> Authenticator | None:
    """The authenticator for ``settings.auth``; ``None`` for ``none`` (every login fails).

    Raises ConfigError for an unusable LDAP configuration (a bad URL, a missing CA file).
    """
    if settings.auth == "none":
        return None
    throttle = Throttle(database, settings.throttle)
    if settings.auth == "ldap" and settings.ldap is not None:
        ldap = LdapAuthenticator(settings.ldap)
        cached = CachingAuthenticator(ldap, ttl=settings.ldap.cache_ttl)
        return ThrottledAuthenticator(cached, throttle, backend="ldap")
    return ThrottledAuthenticator(LocalAuthenticator(database), throttle, backend="local")
