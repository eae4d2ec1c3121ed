"""SmarterTrack's ``variable=value`` lists as typed, case-insensitive values.

SmarterTrack sends every input as a list of strings ``name=value`` and reads every
output the same way. This module is the one place that format is parsed and built:

* an entry is split on the first ``=``; the value keeps any further ``=``, spaces,
  unicode and XML-special characters exactly;
* names match case-insensitively (SmarterTrack sends ``authPW``, the documentation
  writes ``AuthPW``); when a name repeats, the last value wins, as in the ASMX sample;
* ``cf_<Name>`` entries are custom fields, ``args_<Key>`` entries event arguments;
* entries without ``=`` (and ``None`` entries) are ignored; ``None`` as the whole list
  is an empty list;
* a numeric input (:meth:`InputVariables.whole_number`) is ASCII digits only, within
  its range; anything else raises :class:`~provider.errors.InvalidInput`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

from provider.errors import ConfigError, InvalidInput
from provider.redact import is_secret_variable

CUSTOM_FIELD_PREFIX = "cf_"
ARGUMENT_PREFIX = "args_"

#: The largest value of a .NET ``int`` (SmarterTrack's numeric ids).
INT32_MAX = 2_147_483_647

# ASCII only: str.isdigit() accepts '²' and other digits int() refuses or reads differently.
_ASCII_DIGITS = re.compile(r"[0-9]+")


def parse_whole_number(name: str, raw: str, *, maximum: int = INT32_MAX) -> int:
    """``raw`` (surrounding white space ignored) as an integer from 0 to ``maximum``.

    Only ASCII digits are accepted; no sign, no unicode digits, nothing longer than
    ``maximum`` can be (so a 5,000-digit value is refused before any conversion).
    Raises :class:`~provider.errors.InvalidInput` naming ``name`` (never the value).
    """
    text = raw.strip()
    if (
        _ASCII_DIGITS.fullmatch(text) is None
        or len(text.lstrip("0")) > len(str(maximum))
        or int(text) > maximum
    ):
        raise InvalidInput(name, f"{name} must be a whole number between 0 and {maximum}")
    return int(text)


def split_entry(entry: str) -> tuple[str, str] | None:
    """``"name=value"`` -> ``("name", "value")``; ``None`` for an entry without ``=``."""
    name, sep, value = entry.partition("=")
    if not sep:
        return None
    return name, value


def name_value_pairs(entries: Iterable[str], *, reader: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` entries an admin typed (``rules test``, ``templates render``, the console) as pairs.

    Raises ConfigError for an entry without ``=`` or one naming a password variable (``reader``
    says who never sees passwords: "rules", "templates").
    """
    pairs = []
    for entry in entries:
        split = split_entry(entry)
        if split is None or not split[0].strip():
            raise ConfigError(f"{entry!r} is not NAME=VALUE")
        if is_secret_variable(split[0]):
            raise ConfigError(f"do not give {split[0].strip()}: {reader} never see passwords")
        pairs.append((split[0].strip(), split[1]))
    return pairs


def format_entry(name: str, value: str) -> str:
    """The inverse of :func:`split_entry`. ``name`` must not contain ``=``."""
    if "=" in name:
        raise ValueError(f"a variable name cannot contain '=': {name!r}")
    return f"{name}={value}"


class InputVariables(Mapping[str, str]):
    """An immutable, case-insensitive view of one call's input variables.

    Iteration yields the names as sent (last spelling wins for repeated names).
    """

    __slots__ = ("_by_key", "_pairs")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs: tuple[tuple[str, str], ...] = tuple(pairs)
        by_key: dict[str, tuple[str, str]] = {}
        for sent, value in self._pairs:
            name = sent.strip()
            key = name.lower()
            by_key.pop(key, None)  # keep the order of the last occurrence
            by_key[key] = (name, value)
        self._by_key = by_key

    @classmethod
    def parse(cls, entries: Iterable[str | None] | None) -> InputVariables:
        """Parse a SmarterTrack list; tolerant of ``None`` and entries without ``=``."""
        pairs = []
        for entry in entries or ():
            if entry is None:
                continue
            split = split_entry(entry)
            if split is not None and split[0].strip():
                pairs.append(split)
        return cls(pairs)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Every parsed entry, in the order received, duplicates included."""
        return self._pairs

    @property
    def by_folded_name(self) -> Mapping[str, tuple[str, str]]:
        """Each variable once: its lower-cased, trimmed name -> (trimmed name as sent, value),
        the last of a repeated name, in the order of those last occurrences. Read only: the
        mapping is this object's own (not a copy)."""
        return self._by_key

    def __getitem__(self, name: str) -> str:
        return self._by_key[name.strip().lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._by_key

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def whole_number(self, name: str, *, maximum: int = INT32_MAX) -> int | None:
        """The input ``name`` as an integer (see :func:`parse_whole_number`).

        ``None`` when it was not sent or is blank; raises
        :class:`~provider.errors.InvalidInput` when it is not a whole number in range.
        """
        raw = self.get(name)
        if raw is None or not raw.strip():
            return None
        return parse_whole_number(name, raw, maximum=maximum)

    def _prefixed(self, prefix: str) -> dict[str, str]:
        size = len(prefix)
        return {
            name[size:]: value
            for name, value in self._by_key.values()
            if name[:size].lower() == prefix and len(name) > size
        }

    @property
    def custom_fields(self) -> dict[str, str]:
        """``cf_<Name>=value`` entries as ``{Name: value}`` (names as sent)."""
        return self._prefixed(CUSTOM_FIELD_PREFIX)

    @property
    def arguments(self) -> dict[str, str]:
        """``args_<Key>=value`` entries as ``{Key: value}`` (names as sent)."""
        return self._prefixed(ARGUMENT_PREFIX)

    def plain(self) -> dict[str, str]:
        """The entries that are neither custom fields nor arguments, by name as sent."""
        return {
            name: value
            for name, value in self._by_key.values()
            if not name.lower().startswith((CUSTOM_FIELD_PREFIX, ARGUMENT_PREFIX))
        }

    def to_list(self) -> list[str]:
        """The entries back as ``name=value`` strings, in the order received."""
        return [format_entry(n, v) for n, v in self._pairs]

    def __repr__(self) -> str:
        # Values can hold passwords: show names only.
        return f"InputVariables(names={list(self)!r})"


class OutputVariables:
    """An ordered list of output variables for a result.

    ``set`` replaces a variable of the same name (case-insensitively) in place, so a
    later rule overrides an earlier one without reordering; ``to_list`` gives what
    SmarterTrack reads.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            self.set(name, value)

    def set(self, name: str, value: str) -> None:
        """Add ``name=value``, replacing any existing value of that name."""
        if "=" in name or not name.strip():
            raise ValueError(f"invalid output variable name: {name!r}")
        key = name.lower()
        if key in self._items:
            self._items[key] = (self._items[key][0], value)
        else:
            self._items[key] = (name, value)

    def get(self, name: str) -> str | None:
        item = self._items.get(name.lower())
        return item[1] if item else None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items.values())

    def to_list(self) -> list[str]:
        return [format_entry(n, v) for n, v in self._items.values()]

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputVariables) and self.items() == other.items()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"OutputVariables({self.items()!r})"
