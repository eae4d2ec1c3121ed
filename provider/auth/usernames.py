"""Usernames as people type them into SmarterTrack's login form.

Every username is normalised once, here: :func:`normalise_username` (Unicode NFKC,
then case folding, then trimming) is the one comparison form behind every key the
provider keeps (the brute-force throttle, the lookup cache, local users, the rules'
``loginUsername``). Directories such as OpenLDAP match ``\uff41\uff4c\uff49\uff43\uff45`` (fullwidth),
``ⓐlice`` (enclosed) and ``ALICE`` to ``alice``; so must every key, or each look-alike
spelling would get its own failure counter.

Accepted forms (NFKC applied, surrounding spaces trimmed, case preserved for display):

* ``DOMAIN\\user`` and ``domain/user`` (the down-level form; SmarterTrack's sample
  splits on the first ``/`` or ``\\``),
* ``user@domain`` (a user principal name; split on the last ``@``),
* plain ``user``.

:func:`parse_username` never touches a directory; the authenticators decide what
to search for and what to bind with.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

MAX_USERNAME_LENGTH = 256
#: Keys longer than this are stored as a SHA-256 digest (the key columns hold 255 characters).
MAX_KEY_LENGTH = 200


def display_form(raw: str) -> str:
    """``raw`` in Unicode NFKC, trimmed, case kept: how a username is shown and sent on.

    NFKC maps compatibility look-alikes to their plain letters (``\uff41``, ``ⓐ`` -> ``a``,
    ``\uff3c`` -> ``\\``, an ideographic space -> a space).
    """
    return unicodedata.normalize("NFKC", raw).strip()


def normalise_username(raw: str) -> str:
    """The comparison form of a username: NFKC, case-folded (NFKC again: folding can
    denormalise), trimmed. ``\uff41\uff4c\uff49\uff43\uff45``, ``ⓐlice``, `` ALICE `` all give ``alice``.

    The one normalisation behind every username key; idempotent.
    """
    folded = unicodedata.normalize("NFKC", display_form(raw).casefold())
    return folded.strip()


def username_key(raw: str) -> str:
    """:func:`normalise_username`, as a SHA-256 digest when longer than :data:`MAX_KEY_LENGTH`."""
    key = normalise_username(raw)
    if len(key) > MAX_KEY_LENGTH:
        return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


class UsernameForm(StrEnum):
    PLAIN = "plain"
    UPN = "upn"
    DOWN_LEVEL = "down-level"


@dataclass(frozen=True)
class Username:
    """A parsed username.

    ``typed`` is the input in :func:`display_form` (NFKC, trimmed), ``account`` the user part without any domain,
    ``domain`` the domain part when one was typed.
    """

    typed: str
    account: str
    domain: str | None
    form: UsernameForm

    @property
    def key(self) -> str:
        """One key per account whatever form or look-alike spelling was typed (throttling)."""
        return username_key(self.account)

    @property
    def candidates(self) -> tuple[str, ...]:
        """The values to look the account up by: the typed UPN first (it is exact), then the account."""
        if self.form is UsernameForm.UPN:
            return (self.typed, self.account)
        return (self.account,)

    @property
    def down_level(self) -> str | None:
        """``DOMAIN\\user`` when a domain was typed in either down-level form."""
        if self.form is UsernameForm.DOWN_LEVEL and self.domain:
            return f"{self.domain}\\{self.account}"
        return None


def parse_username(raw: str) -> Username:
    """Parse a typed username; raises ``ValueError`` when nothing usable is left.

    The input is put in :func:`display_form` first, so a fullwidth ``\uff3c`` or ``\uff20``
    separates like the plain one. The caller answers a ``ValueError`` like a wrong
    password (``Authentication=FAIL``).
    """
    if len(raw) > 4 * MAX_USERNAME_LENGTH:  # before normalising: bounded work for any input
        raise ValueError("username too long")
    typed = display_form(raw)
    if not typed:
        raise ValueError("empty username")
    if len(typed) > MAX_USERNAME_LENGTH:
        raise ValueError("username too long")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in typed):
        raise ValueError("control characters in username")
    separators = [i for i in (typed.find("\\"), typed.find("/")) if i >= 0]
    if separators:
        cut = min(separators)
        domain, account = typed[:cut].strip(), typed[cut + 1 :].strip()
        if not domain or not account:
            raise ValueError("incomplete DOMAIN\\user name")
        return Username(typed=typed, account=account, domain=domain, form=UsernameForm.DOWN_LEVEL)
    if "@" in typed:
        account, _, domain = typed.rpartition("@")
        account, domain = account.strip(), domain.strip()
        if not account or not domain:
            raise ValueError("incomplete user@domain name")
        return Username(typed=f"{account}@{domain}", account=account, domain=domain, form=UsernameForm.UPN)
    return Username(typed=typed, account=typed, domain=None, form=UsernameForm.PLAIN)
