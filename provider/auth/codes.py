"""Sign-in codes as passwords: the address as username, a one-time code as password.

:class:`CodeAuthenticator` sits between the brute-force throttle and the configured
authenticator (``ThrottledAuthenticator(CodeAuthenticator(inner))``), so a wrong code
is counted like a wrong password. A password that could be a code (its length and
alphabet, :func:`~provider.comms.signin_codes.looks_like_code`) is first offered to the
:class:`~provider.domain.SignInCodeVerifier`; when it is not the address's current code
the ordinary password check follows, so passwords keep working as before. Without an
inner authenticator (``ST_PROVIDER_AUTH=none``) only codes sign in.
"""

from __future__ import annotations

import logging

from provider.auth import base
from provider.comms.signin_codes import looks_like_code
from provider.domain import Authenticator, Identity, SignInCodeVerifier
from provider.settings import OtpSettings

log = logging.getLogger("provider.auth.codes")

#: The failure reason of a code that is not (or no longer) valid, without a password backend.
BAD_CODE = "bad_code"


class CodeAuthenticator:
    """An :class:`~provider.domain.Authenticator` accepting sign-in codes, then ``inner``'s passwords."""

    def __init__(
        self, verifier: SignInCodeVerifier, settings: OtpSettings, inner: Authenticator | None
    ) -> None:
        self._verifier = verifier
        self._settings = settings
        self._inner = inner

    @property
    def inner(self) -> Authenticator | None:
        return self._inner

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        """The code's identity, or ``inner``'s answer; raises AuthenticationFailed,
        DirectoryUnavailable or StorageError as the authenticators do."""
        if looks_like_code(password, self._settings):
            identity = self._verifier.redeem(username.strip(), password)
            if identity is not None:
                log.info(
                    "sign-in code accepted",
                    extra={"event": "auth.ok", "backend": "code", "username": identity.username},
                )
                return identity
        if self._inner is None:
            name = base.login_name(username, password, backend="code", client=client_address)
            raise base.fail(BAD_CODE, backend="code", username=name.typed, client=client_address)
        return self._inner.authenticate(username, password, client_address=client_address)

    def lookup(self, username: str) -> Identity | None:
        return self._inner.lookup(username) if self._inner is not None else None
