"""Helpers every authenticator shares: escaping, DNs, account states, failure reasons, timing.

Pure functions and small classes; nothing here opens a connection.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from provider.auth.usernames import Username, parse_username
from provider.errors import AuthenticationFailed

log = logging.getLogger("provider.auth")

# --- failure reasons (log-only; callers see a neutral message) ---------------------

EMPTY_PASSWORD = "empty_password"  # noqa: S105 (a reason, not a password)
INVALID_USERNAME = "invalid_username"
UNKNOWN_USER = "unknown_user"
BAD_PASSWORD = "bad_password"  # noqa: S105 (a reason, not a password)
AMBIGUOUS_USER = "ambiguous_user"
DISABLED = "disabled"
LOCKED = "locked"
PASSWORD_EXPIRED = "password_expired"  # noqa: S105 (a reason, not a password)
ACCOUNT_EXPIRED = "account_expired"
MUST_CHANGE_PASSWORD = "must_change_password"  # noqa: S105 (a reason, not a password)
LOGON_HOURS = "logon_hours"
WORKSTATION = "workstation_restricted"
NOT_IN_GROUP = "not_in_group"
THROTTLED = "throttled"
BIND_REFUSED = "bind_refused"

# Reasons that never reached a password check: they do not count as guesses.
NOT_COUNTED = frozenset({EMPTY_PASSWORD, INVALID_USERNAME, THROTTLED})

# Active Directory puts a sub-code in the diagnostic message of a failed bind:
# "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 52e, v3839".
AD_BIND_SUBCODES = {
    "525": UNKNOWN_USER,
    "52e": BAD_PASSWORD,
    "530": LOGON_HOURS,
    "531": WORKSTATION,
    "532": PASSWORD_EXPIRED,
    "533": DISABLED,
    "701": ACCOUNT_EXPIRED,
    "773": MUST_CHANGE_PASSWORD,
    "775": LOCKED,
}
_HEX_PAIR = re.compile(r"[0-9a-fA-F]{2}")
_AD_DATA = re.compile(r"\bdata\s+([0-9a-f]{3,8})\b", re.IGNORECASE)

# userAccountControl flags (MS-ADTS 2.2.16).
UAC_ACCOUNTDISABLE = 0x2
UAC_LOCKOUT = 0x10
UAC_PASSWORD_EXPIRED = 0x800000
# accountExpires: 100 ns intervals since 1601-01-01; 0 and 2**63-1 mean "never".
_AD_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_AD_NEVER = (0, 0x7FFFFFFFFFFFFFFF)


def fail(reason: str, **fields: object) -> AuthenticationFailed:
    """Log an ``auth.fail`` event with ``reason`` (and the worker's ``pid``); return the exception to raise."""
    log.info(
        "authentication refused", extra={"event": "auth.fail", "reason": reason, "pid": os.getpid(), **fields}
    )
    return AuthenticationFailed(reason)


def login_name(username: str, password: str, *, backend: str, client: str | None) -> Username:
    """The parsed ``username`` of a login attempt, checked before any lookup.

    Raises (and logs) :class:`~provider.errors.AuthenticationFailed` for a blank password
    (:data:`EMPTY_PASSWORD`) or a name that cannot be a username (:data:`INVALID_USERNAME`).
    """
    if is_blank(password):
        raise fail(EMPTY_PASSWORD, backend=backend, client=client)
    try:
        return parse_username(username)
    except ValueError as exc:
        raise fail(INVALID_USERNAME, backend=backend, client=client) from exc


def is_blank(password: str) -> bool:
    """Whether ``password`` is empty or only whitespace.

    RFC 4513 5.1.2: a simple bind with a name and an empty password is an
    *unauthenticated* bind that some servers (Active Directory) answer with success.
    ldap3 sends a blank password as a real bind, so the provider refuses it itself.
    """
    return not password or not password.strip()


def ad_bind_reason(message: str | None) -> str | None:
    """The failure reason named by an Active Directory bind sub-code, if the message has one."""
    if not message:
        return None
    match = _AD_DATA.search(message)
    if match is None:
        return None
    return AD_BIND_SUBCODES.get(match.group(1).lower())


def account_problem(attributes: Mapping[str, Sequence[str]], now: datetime | None = None) -> str | None:
    """Why an account found in the directory cannot log in, or ``None``.

    Reads Active Directory's ``userAccountControl`` (disabled, locked, password
    expired) and ``accountExpires``. Other directories pass unless they carry these.
    """
    lowered = {k.lower(): v for k, v in attributes.items()}
    control = _first_int(lowered.get("useraccountcontrol"))
    if control is not None:
        if control & UAC_ACCOUNTDISABLE:
            return DISABLED
        if control & UAC_LOCKOUT:
            return LOCKED
        if control & UAC_PASSWORD_EXPIRED:
            return PASSWORD_EXPIRED
    expires = _first_int(lowered.get("accountexpires"))
    if expires is not None and expires not in _AD_NEVER and expires > 0:
        moment = _AD_EPOCH + timedelta(microseconds=expires // 10)
        if moment <= (now or datetime.now(UTC)):
            return ACCOUNT_EXPIRED
    return None


def _first_int(values: Sequence[str] | None) -> int | None:
    if not values:
        return None
    try:
        return int(str(values[0]).strip())
    except ValueError:
        return None


# --- escaping (RFC 4515 filters, RFC 4514 DNs) ----------------------------------------


def escape_filter_value(value: str) -> str:
    """Escape an assertion value for an LDAP search filter (RFC 4515 section 3).

    ``*``, ``(``, ``)``, ``\\`` and NUL become ``\\2a``, ``\\28``, ``\\29``, ``\\5c``,
    ``\\00``; everything else (non-ASCII included) is sent as UTF-8.
    """
    return (
        value.replace("\\", "\\5c")
        .replace("*", "\\2a")
        .replace("(", "\\28")
        .replace(")", "\\29")
        .replace("\x00", "\\00")
    )


def fill_filter(template: str, value: str) -> str:
    """``template`` with every ``{username}`` replaced by the escaped ``value``."""
    return template.replace("{username}", escape_filter_value(value))


def escape_dn_value(value: str) -> str:
    """Escape one attribute value for use in a DN (RFC 4514 section 2.4)."""
    out = []
    last = len(value) - 1
    for index, char in enumerate(value):
        if char in '\\,+"<>;=' or (index == 0 and char in " #") or (index == last and char == " "):
            out.append("\\" + char)
        elif char == "\x00":
            out.append("\\00")
        else:
            out.append(char)
    return "".join(out)


def parse_dn(dn: str) -> list[list[tuple[str, str]]]:
    """Split a DN into RDNs of ``(attribute, unescaped value)`` pairs (RFC 4514).

    Raises ``ValueError`` for a malformed DN.
    """
    rdns: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    i, n = 0, len(dn)
    if not dn.strip():
        return []
    while i < n:
        eq = dn.find("=", i)
        if eq < 0:
            raise ValueError("attribute without '='")
        attr = dn[i:eq].strip()
        if not attr:
            raise ValueError("empty attribute type")
        value, i = _dn_value(dn, eq + 1)
        current.append((attr, value))
        if i < n and dn[i] == "+":
            i += 1
            continue
        rdns.append(current)
        current = []
        i += 1  # past ',' or ';' (or the end)
    return rdns


def _dn_value(dn: str, i: int) -> tuple[str, int]:
    """One unescaped attribute value starting at ``i``; returns it and the index of its separator."""
    n = len(dn)
    raw = bytearray()
    pending_space = 0
    while i < n and dn[i] == " ":
        i += 1
    while i < n and dn[i] not in ",+;":
        char = dn[i]
        if char == " ":
            pending_space += 1
            i += 1
            continue
        raw += b" " * pending_space
        pending_space = 0
        if char == "\\":
            if i + 1 >= n:
                raise ValueError("dangling escape")
            if _HEX_PAIR.fullmatch(dn[i + 1 : i + 3]):
                raw.append(int(dn[i + 1 : i + 3], 16))
                i += 3
            else:
                raw += dn[i + 1].encode("utf-8")
                i += 2
            continue
        raw += char.encode("utf-8")
        i += 1
    try:
        return raw.decode("utf-8"), i
    except UnicodeDecodeError as exc:
        raise ValueError("value is not UTF-8") from exc


def rdn_value(dn: str) -> str:
    """The value of the first RDN (``cn=Support,ou=groups,...`` -> ``Support``); the DN if unparsable."""
    try:
        rdns = parse_dn(dn)
    except ValueError:
        return dn
    if not rdns or not rdns[0]:
        return dn
    return rdns[0][0][1]


def dn_key(dn: str) -> str:
    """A comparison key for DNs: attribute names and values case-folded, spacing and escapes normalised."""
    try:
        rdns = parse_dn(dn)
    except ValueError:
        return dn.strip().casefold()
    return ",".join(
        "+".join(sorted(f"{attr.casefold()}={value.casefold()}" for attr, value in rdn)) for rdn in rdns
    )


def group_matches(required: str, names: Iterable[str], dns: Iterable[str]) -> bool:
    """Whether a required group (a name like ``Staff`` or a full DN) is among the user's groups."""
    if "=" in required:
        wanted = dn_key(required)
        return any(dn_key(dn) == wanted for dn in dns)
    folded = required.strip().casefold()
    return any(name.casefold() == folded for name in names)


# --- secrets in attributes -------------------------------------------------------------

_SECRET_ATTRIBUTE = re.compile(r"pass|pwd|secret|krb|lmhash|nthash|supplementalcredentials", re.IGNORECASE)


def is_secret_attribute(name: str) -> bool:
    """Attributes never handed to rules, logs or results (``userPassword``, ``unicodePwd``...)."""
    return bool(_SECRET_ATTRIBUTE.search(name))


# --- timing -------------------------------------------------------------------------------


class TimingFloor:
    """Pads fast failure paths up to the typical duration of the slow one.

    A missing user fails after one search; a wrong password after a search and a
    bind. :meth:`observe` records how long the full path takes (an exponentially
    weighted average); :meth:`pad` sleeps a faster failure up to it, so response
    times do not tell which usernames exist. Capped at ``cap`` seconds.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.2,
        cap: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._alpha = alpha
        self._cap = cap
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._average: float | None = None

    @property
    def known(self) -> bool:
        return self._average is not None

    @property
    def average(self) -> float | None:
        return self._average

    def observe(self, seconds: float) -> None:
        seconds = min(max(seconds, 0.0), self._cap)
        with self._lock:
            if self._average is None:
                self._average = seconds
            else:
                self._average += self._alpha * (seconds - self._average)

    def pad(self, started: float) -> float:
        """Sleep until ``started`` + the average; returns the seconds slept."""
        average = self._average
        if average is None:
            return 0.0
        remaining = started + average - self._clock()
        if remaining > 0:
            self._sleep(remaining)
            return remaining
        return 0.0
