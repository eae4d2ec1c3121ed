"""One-time sign-in codes: made, stored as a hash, redeemed exactly once.

A code is drawn with :mod:`secrets` from the configured alphabet (``numeric``: digits;
``alphanumeric``: upper-case letters and digits without the look-alikes ``0 O 1 I``)
and length (4, 6 or 8). Only its hash is stored: HMAC-SHA256 keyed by a random
per-row salt over the address and the code, so a stored hash neither reveals the code
nor serves for another address. A code lasts ``ttl_seconds``; a new code for an
address replaces (invalidates) the earlier ones; redeeming marks it used with a
conditional update, so two concurrent logins with one code cannot both succeed.

Limits: every request of the public page is recorded (known address or not) with its
client address; :meth:`SignInCodes.admit` says whether it is within
``max_per_address`` and ``max_per_client`` per ``window_seconds``.

The clock is injected (tests move time); every method raises
:class:`~provider.errors.StorageError` when the database fails.
"""

from __future__ import annotations

import hmac
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from provider.comms.addresses import AddressKind, InvalidAddress, kind_of, normalise
from provider.comms.signin_scrub import code_hash, purge_expired, scrub_codes
from provider.db.session import Database
from provider.db.signin import SignInCode, SignInRequest
from provider.domain import Identity
from provider.settings import OtpSettings

ALPHABETS = {
    "numeric": string.digits,
    "alphanumeric": "ABCDEFGHJKLMNPQRSTUVWXYZ23456789",
}
SALT_BYTES = 16


@dataclass(frozen=True)
class IssuedCode:
    """A new code (to render into its message) and its row's id."""

    code: str
    id: int


@dataclass(frozen=True)
class Address:
    """An address as typed, normalised (E.164 or lower-cased e-mail), with its kind."""

    value: str
    kind: AddressKind


def parse_address(text: str) -> Address | None:
    """``text`` as an :class:`Address`; ``None`` when it is neither a phone number nor an e-mail address."""
    if not text or len(text) > 320:
        return None
    kind = kind_of(text)
    try:
        return Address(normalise(text, kind), kind)
    except InvalidAddress:
        return None


def generate_code(length: int, alphabet: str, choice: Callable[[str], str] = secrets.choice) -> str:
    """A new code of ``length`` characters from the named ``alphabet``."""
    letters = ALPHABETS[alphabet]
    return "".join(choice(letters) for _ in range(length))


def canonical_code(text: str, alphabet: str) -> str:
    """A typed code in its stored form (trimmed; upper-cased for ``alphanumeric``)."""
    code = text.strip()
    return code.upper() if alphabet == "alphanumeric" else code


def looks_like_code(text: str, settings: OtpSettings) -> bool:
    """Whether ``text`` could be a code at all (length and alphabet): no lookup for other passwords."""
    code = canonical_code(text, settings.alphabet)
    return len(code) == settings.length and all(c in ALPHABETS[settings.alphabet] for c in code)


class SignInCodes:
    """The stored codes and requests (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        settings: OtpSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        choice: Callable[[str], str] = secrets.choice,
    ) -> None:
        self._database = database
        self._settings = settings
        self._clock = clock
        self._choice = choice

    @property
    def settings(self) -> OtpSettings:
        return self._settings

    # --- requests and limits ------------------------------------------------------------

    def admit(self, address: str, client: str | None) -> bool:
        """Record one request for ``address`` from ``client``; whether it is within the limits.

        Every request is recorded, known address or not, so the work does not depend on
        who exists; rows older than the window are removed on the way.
        """
        now = self._clock()
        since = now - timedelta(seconds=self._settings.window_seconds)
        with self._database.session(immediate=True) as session:
            session.execute(sa.delete(SignInRequest).where(SignInRequest.requested_at <= since))
            session.add(SignInRequest(address=address[:320], client=(client or None), requested_at=now))
            session.flush()
            for_address = _count(session, SignInRequest.address == address[:320], since)
            for_client = _count(session, SignInRequest.client == client, since) if client else 0
        return for_address <= self._settings.max_per_address and for_client <= self._settings.max_per_client

    # --- codes -----------------------------------------------------------------------------

    def issue(self, session: Session, address: Address, identity: Identity) -> str:
        """A new code for ``address`` signing in as ``identity``, stored in ``session``; the code.

        Earlier codes of the address are marked replaced. The caller commits ``session``
        (with the code's delivery, so both are stored or neither).
        """
        return self.issue_code(session, address, identity).code

    def issue_code(self, session: Session, address: Address, identity: Identity) -> IssuedCode:
        """:meth:`issue`, with the new row's id (for :func:`~provider.comms.signin_scrub.event_fingerprint`).

        The replaced codes can no longer sign in; they are scrubbed from their deliveries already
        sent (an unsent one goes out as written, and is scrubbed when the code expires).
        """
        now = self._clock()
        code = generate_code(self._settings.length, self._settings.alphabet, self._choice)
        salt = secrets.token_bytes(SALT_BYTES)
        replaced = session.scalars(
            sa.select(SignInCode).where(
                SignInCode.address == address.value,
                SignInCode.used_at.is_(None),
                SignInCode.replaced_at.is_(None),
            )
        ).all()
        for old in replaced:
            old.replaced_at = now
        scrub_codes(session, replaced, sent_only=True)
        row = SignInCode(
            address=address.value,
            kind=address.kind,
            salt=salt.hex(),
            code_hash=code_hash(salt, address.value, code),
            username=identity.username[:320],
            email=(identity.email or None) and str(identity.email)[:320],
            display_name=(identity.display_name or None) and str(identity.display_name)[:255],
            created_at=now,
            expires_at=now + timedelta(seconds=self._settings.ttl_seconds),
        )
        session.add(row)
        session.flush()
        return IssuedCode(code, row.id)

    def redeem(self, address: str, code: str) -> Identity | None:
        """The identity the current code of ``address`` signs in as, if ``code`` is it (see
        :class:`~provider.domain.SignInCodeVerifier`); the code is then used up."""
        parsed = parse_address(address)
        if parsed is None:
            return None
        typed = canonical_code(code, self._settings.alphabet)
        now = self._clock()
        with self._database.session(immediate=True) as session:
            row = session.execute(
                sa.select(SignInCode)
                .where(
                    SignInCode.address == parsed.value,
                    SignInCode.used_at.is_(None),
                    SignInCode.replaced_at.is_(None),
                    SignInCode.expires_at > now,
                )
                .order_by(SignInCode.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            expected = row.code_hash if row is not None else "0" * 64
            salt = bytes.fromhex(row.salt) if row is not None else b"\x00" * SALT_BYTES
            matches = hmac.compare_digest(code_hash(salt, parsed.value, typed), expected)
            if row is None or not matches:
                return None
            used = session.execute(
                sa.update(SignInCode)
                .where(SignInCode.id == row.id, SignInCode.used_at.is_(None))
                .values(used_at=now)
            )
            if int(getattr(used, "rowcount", 0) or 0) != 1:
                return None
            scrub_codes(session, [row])
            return Identity(
                username=row.username,
                email=row.email,
                display_name=row.display_name,
                attributes={"address": (parsed.value,)},
            )

    def purge(self) -> int:
        """Scrub the deliveries of expired codes and remove those codes; how many (one batch).

        The retention purge does the same (:func:`~provider.comms.signin_scrub.purge_expired`).
        """
        return purge_expired(self._database, self._clock())


def _count(session: Session, condition: sa.ColumnElement[bool], since: datetime) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(SignInRequest)
        .where(condition, SignInRequest.requested_at > since)
    )
    return int(session.execute(query).scalar_one())
