"""Redaction: the one place that knows which names are secret and how values are hidden.

Used by logging (:mod:`provider.logging`: secret-named fields), the calls and rules
that drop SmarterTrack's password variables (:data:`SECRET_VARIABLES`), the channels
(:class:`Redactor`: a partner client's own secrets out of its error texts) and the
delivery worker and reports (:func:`redact`: stored attempt errors).

Redaction replaces values, never the words around them: a secret inside a longer word
is not a value (a header value ``support`` leaves ``unsupported`` alone), and
``'application_key': environment variable X is not set`` is prose, not a pair.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
#: SmarterTrack variables that carry passwords (compared lower-case): never stored, logged or
#: shown to rules
SECRET_VARIABLES = frozenset({"authpw", "loginpassword"})
#: structured log fields whose value is always replaced (compared lower-case)
SECRET_FIELDS = SECRET_VARIABLES | frozenset({"password", "token", "secret", "client_secret"})
MAX_ERROR_CHARS = 500
#: secret values shorter than this are not searched for in stored errors (they would
#: redact ordinary words)
MIN_SECRET_CHARS = 4
#: a channel's own secrets shorter than this are not searched for
MIN_CHANNEL_SECRET_CHARS = 3

_VAR_REFERENCE = re.compile(r"\$\{([^}]*)\}")
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


def is_secret_variable(name: str) -> bool:
    """Whether the SmarterTrack variable ``name`` carries a password (any case, spaces ignored)."""
    return name.strip().lower() in SECRET_VARIABLES


_SECRET_NAME = re.compile(_NAMES, re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether a variable called ``name`` holds a secret: a password variable, or a name
    containing ``password``, ``secret``, ``token``, ``api_key`` ... (its value is shown as
    :data:`REDACTED` wherever it is stored or printed)."""
    return is_secret_variable(name) or bool(_SECRET_NAME.search(name))


def _bounded(secret: str) -> str:
    """A pattern for ``secret`` that does not match inside a longer word.

    Where the secret begins or ends with a word character, that neighbour must not be
    one (``%3D`` counts as a separator, so a percent-encoded ``name%3Dsecret`` is still caught).
    """
    pattern = re.escape(secret)
    if re.match(r"\w", secret[0]):
        pattern = r"(?:(?<!\w)|(?<=%[0-9A-Fa-f]{2}))" + pattern
    if re.match(r"\w", secret[-1]):
        pattern += r"(?!\w)"
    return pattern


def replace_values(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` replaced where it stands as a value of its own."""
    patterns = [_bounded(s) for s in sorted(set(secrets), key=len, reverse=True) if s]
    return re.sub("|".join(patterns), REDACTED, text) if patterns else text


class Redactor:
    """Removes known secret values (and their URL-encoded forms) from text (a channel's own)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    @staticmethod
    def _forms(secret: str) -> set[str]:
        return {secret, quote(secret, safe=""), quote_plus(secret)}

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= MIN_CHANNEL_SECRET_CHARS:
            self._secrets.update(self._forms(secret))

    def discard(self, secret: str | None) -> None:
        """Forget ``secret`` (an expired token) so the set does not grow without bound."""
        if secret:
            self._secrets.difference_update(self._forms(secret))

    def __call__(self, text: str) -> str:
        """``text`` with each known secret replaced where it stands as a value of its own."""
        return replace_values(text, self._secrets)


def secret_values(settings: Mapping[str, Any], environment: Mapping[str, str]) -> frozenset[str]:
    """Every environment value the channel settings reference as ``${VAR}`` (recursively)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            for name in _VAR_REFERENCE.findall(value):
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


def _replace_value(match: re.Match[str]) -> str:
    """The match with only its value group replaced."""
    group = "value" if match.group("value") is not None else "quoted"
    start, end = match.span(group)
    offset = match.start()
    text = match.group(0)
    return text[: start - offset] + REDACTED + text[end - offset :]


def redact(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """``text`` without ``secrets``, ``Bearer`` tokens and values of secret-named pairs.

    At most :data:`MAX_ERROR_CHARS` characters; for delivery errors before they are
    stored, logged or reported.
    """
    if text is None:
        return None
    cleaned = replace_values(text, [s for s in secrets if len(s) >= MIN_SECRET_CHARS])
    cleaned = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", cleaned)
    cleaned = _NAMED.sub(_replace_value, cleaned)
    if len(cleaned) > MAX_ERROR_CHARS:
        cleaned = cleaned[: MAX_ERROR_CHARS - 1] + "…"
    return cleaned


def redact_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` (a log record's extras) with every secret-named field's value replaced."""
    return {key: REDACTED if key.lower() in SECRET_FIELDS else value for key, value in fields.items()}
