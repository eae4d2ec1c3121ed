"""A secret value (passwords, keys) that never shows itself, compared in constant time."""

from __future__ import annotations

import hmac


class Secret:
    """A secret string that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: pass it only to the party that needs it."""
        return self._value

    def matches(self, candidate: str | None) -> bool:
        """Constant-time comparison with ``candidate`` (``None`` never matches)."""
        if candidate is None:
            # Still compare, so a missing value costs the same as a wrong one.
            hmac.compare_digest(self._value.encode(), b"\x00")
            return False
        return hmac.compare_digest(self._value.encode("utf-8"), candidate.encode("utf-8"))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))
