"""Addresses as the suppression list stores them: phone numbers in E.164, e-mail lower-cased.

The phone normaliser is deliberately small and strict rather than ``phonenumbers``:
the provider has no default region to guess a national number's country from, and
only needs one canonical key per number (the partner validates deliverability), so a
number must carry its country code (``+`` or ``00``). Spaces, dots, hyphens and
parentheses between digits are dropped; anything else is refused. E.164 allows at
most 15 digits, the first not ``0``; fewer than 8 digits is no subscriber number.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from provider.errors import ProviderError

AddressKind = Literal["sms", "email"]

_SEPARATORS = re.compile(r"[\s.\-()/]")
_DIGITS = re.compile(r"^[1-9][0-9]{7,14}$")
_EMAIL = re.compile(r"^[^@\s<>\",;]{1,64}@[^@\s<>\",;]{1,255}$")
MIN_DIGITS = 8
MAX_DIGITS = 15


class InvalidAddress(ProviderError):
    """An address that is neither an international phone number nor an e-mail address."""


def normalise_phone(text: str) -> str:
    """``text`` as E.164 (``+14155550123``); raises :class:`InvalidAddress`.

    Accepts ``+1 (415) 555-0123``, ``0044 20 7946 0018``; refuses numbers without a
    country code, letters, or too few/many digits.
    """
    raw = unicodedata.normalize("NFKC", str(text)).strip()
    if raw.startswith("+"):
        rest = raw[1:]
    elif raw.startswith("00"):
        rest = raw[2:]
    else:
        raise InvalidAddress("a phone number needs its country code (+CC or 00CC)")
    digits = _SEPARATORS.sub("", rest)
    if not digits.isascii() or not _DIGITS.match(digits):
        raise InvalidAddress(f"not an E.164 phone number ({MIN_DIGITS}-{MAX_DIGITS} digits after the +)")
    return "+" + digits


def normalise_email(text: str) -> str:
    """``text`` trimmed and lower-cased (the whole address); raises :class:`InvalidAddress`."""
    value = unicodedata.normalize("NFKC", str(text)).strip().lower()
    if not _EMAIL.match(value) or "." not in value.rsplit("@", 1)[1]:
        raise InvalidAddress("not an e-mail address")
    return value


def kind_of(text: str) -> AddressKind:
    """Whether ``text`` is written as an e-mail address or a phone number."""
    return "email" if "@" in str(text) else "sms"


def normalise(text: str, kind: AddressKind | None = None) -> str:
    """``text`` normalised as ``kind`` (guessed from ``@`` when not given)."""
    return normalise_email(text) if (kind or kind_of(text)) == "email" else normalise_phone(text)
