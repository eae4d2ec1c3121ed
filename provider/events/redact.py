"""Redaction of delivery errors before they are stored, logged or reported.

Partner error texts and exception messages may echo tokens, passwords or keys.
:func:`redact` removes every value the channel's settings take from the
environment (``${VAR}``: secrets always come from there), ``Bearer`` tokens and
``name=value`` pairs whose name looks secret, and bounds the length.
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
_NAMED = re.compile(
    r"(?i)((?:access_?token|refresh_?token|token|password|passwd|pwd|secret|client_?secret|api_?key|"
    r"application[-_]?key|authorization|jpToken|jp_token)[\"']?\s*[:=]\s*[\"']?)([^\"'&\s,;}]+)"
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


def redact(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """``text`` without secrets, at most :data:`MAX_ERROR_CHARS` characters."""
    if text is None:
        return None
    cleaned = text
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_CHARS:
            cleaned = cleaned.replace(secret, REDACTED)
    cleaned = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", cleaned)
    cleaned = _NAMED.sub(lambda m: f"{m.group(1)}{REDACTED}", cleaned)
    if len(cleaned) > MAX_ERROR_CHARS:
        cleaned = cleaned[: MAX_ERROR_CHARS - 1] + "…"
    return cleaned
