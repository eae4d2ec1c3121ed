"""Usernames as people type them into SmarterTrack's login form.

Accepted forms (surrounding spaces trimmed, case preserved for display):

* ``DOMAIN\\user`` and ``domain/user`` (the down-level form; SmarterTrack's sample
  splits on the first ``/`` or ``\\``),
* ``user@domain`` (a user principal name; split on the last ``@``),
* plain ``user``.

:func:`parse_username` never touches a directory; the authenticators decide what
to search for and what to bind with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

MAX_USERNAME_LENGTH = 256


class UsernameForm(StrEnum):
    PLAIN = "plain"
    UPN = "upn"
    DOWN_LEVEL = "down-level"


@dataclass(frozen=True)
class Username:
    """A parsed username.

    ``typed`` is the trimmed input, ``account`` the user part without any domain,
    ``domain`` the domain part when one was typed.
    """

    typed: str
    account: str
    domain: str | None
    form: UsernameForm

    @property
    def key(self) -> str:
        """A case-insensitive key for one account whatever form was typed (throttling, caches)."""
        folded = self.account.casefold()
        if len(folded) > 200:
            return "sha256:" + hashlib.sha256(folded.encode("utf-8")).hexdigest()
        return folded

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

    The caller answers a ``ValueError`` like a wrong password (``Authentication=FAIL``).
    """
    typed = raw.strip()
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
