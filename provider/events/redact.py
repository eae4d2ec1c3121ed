"""Redaction of delivery errors before they are stored, logged or reported.

Partner error texts and exception messages may echo tokens, passwords or keys.
:func:`redact` removes every value the channel's settings take from the
environment (``${VAR}``: secrets always come from there), ``Bearer`` tokens and
``name=value`` pairs whose name looks secret, and bounds the length. Only values are
replaced, never the words around them (a secret inside a longer word is not a value;
``'application_key': environment variable ...`` is prose, not a pair).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from provider.channels.config import references

REDACTED = "[redacted]"
MAX_ERROR_CHARS = 500
#: secret values shorter than this are not searched for (they would redact ordinary words)
MIN_SECRET_CHARS = 4

_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_NAMES = (
    r"(?:access_?token|refresh_?token|token|password|passwd|pwd|secret|client_?secret|api_?key|"
    r"application[-_]?key|authorization|jpToken|jp_token)"
)
#: ``name=value`` / ``name: value`` (a bare name), or ``"name": "value"`` (a quoted name needs a
#: quoted value: after ``'application_key':`` comes prose, not a value). Group "value" is replaced.
_NAMED = re.compile(
    rf"(?i)(?:(?<![\"'])(?:{_NAMES})\s*[:=]\s*[\"']?(?!(?:bearer|basic)\s)(?P<value>[^\"'&\s,;}}]+)"
    rf"|(?P<q>[\"']){_NAMES}(?P=q)\s*[:=]\s*(?P<vq>[\"'])(?P<quoted>[^\"']+)(?P=vq))"
)


def secret_values(settings: Mapping[str, Any], environment: Mapping[str, str]) -> frozenset[str]:
    """Every environment value the channel settings reference (recursively)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            for name in references(value):
                secret = environment.get(name)
                if secret and len(secret) >= MIN_SECRET_CHARS:
                    found.add(secret)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    return frozenset(found)


def _bounded(secret: str) -> str:
    """A pattern for ``secret`` that does not match inside a longer word.

    Redaction replaces values, never the words around them: where the secret begins or
    ends with a word character, that neighbour must not be one (``%3D`` counts as a
    separator, so a percent-encoded ``name%3Dsecret`` is still caught).
    """
    pattern = re.escape(secret)
    if re.match(r"\w", secret[0]):
        pattern = r"(?:(?<!\w)|(?<=%[0-9A-Fa-f]{2}))" + pattern
    if re.match(r"\w", secret[-1]):
        pattern += r"(?!\w)"
    return pattern


def _replace_value(match: re.Match[str]) -> str:
    """The match with only its value group replaced."""
    group = "value" if match.group("value") is not None else "quoted"
    start, end = match.span(group)
    offset = match.start()
    text = match.group(0)
    return text[: start - offset] + REDACTED + text[end - offset :]


def redact(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """``text`` without secrets, at most :data:`MAX_ERROR_CHARS` characters."""
    if text is None:
        return None
    cleaned = text
    known = [_bounded(s) for s in sorted(secrets, key=len, reverse=True) if len(s) >= MIN_SECRET_CHARS]
    if known:
        cleaned = re.sub("|".join(known), REDACTED, cleaned)
    cleaned = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", cleaned)
    cleaned = _NAMED.sub(_replace_value, cleaned)
    if len(cleaned) > MAX_ERROR_CHARS:
        cleaned = cleaned[: MAX_ERROR_CHARS - 1] + "…"
    return cleaned
