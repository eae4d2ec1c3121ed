"""The context a rule sees: one call's inputs under SmarterTrack's names.

:func:`build_context` turns ``(operation, variables, identity)`` into the mapping every
``when`` and template of that call is evaluated against:

* each SmarterTrack input under its documented name (:data:`CANONICAL_NAMES`, e.g.
  ``loginUsername``, ``departmentName``), matched case-insensitively from what was
  sent; an input that was not sent is ``""`` (``eventType``, an integer, is ``None``).
  The usernames (``loginUsername``, ``username``) are in their normalised form
  (:func:`~provider.auth.usernames.normalise_username`: NFKC, case-folded, trimmed),
  so ``loginUsername == 'bob'`` holds for ``BOB`` and for look-alikes such as ``\uff42\uff4f\uff42``;
  the value as sent stays in ``variables``;
* ``cf``: custom fields by name without ``cf_``; ``args``: event arguments without
  ``args_``; ``variables``: every other input as sent. All three match names
  case-insensitively; a missing key raises, so the rule is skipped;
* ``eventName`` (``502000`` -> ``"Ticket Created"``, else ``None``) and ``method``;
* ``user``: the directory's attributes of the user (each a list of values that prints
  as its values joined by ``", "`` and equals a string when it has exactly that one
  value), plus ``username``, ``email``, ``display_name`` and ``dn``; empty when the
  directory does not know the user;
* ``groups``: the user's group names (``in`` ignores case); empty otherwise;
* ``vars``: the global variables (:mod:`provider.comms.templates`), set by the rule set.
* ``code`` and ``minutes``: a one-time sign-in code and how many minutes it lasts, when
  a sign-in code's template is rendered (:mod:`provider.comms.signin_delivery`); ``""``
  in every other context.

The password variables (``authPW``, ``loginPassword``) are never in the context.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from provider.auth.usernames import normalise_username
from provider.domain import Identity, Method
from provider.errors import InvalidInput
from provider.event_types import event_name
from provider.redact import SECRET_VARIABLES
from provider.variables import ARGUMENT_PREFIX, CUSTOM_FIELD_PREFIX, InputVariables, parse_whole_number

#: SmarterTrack's input variables, as the sample provider spells them.
CANONICAL_NAMES: tuple[str, ...] = (
    "loginUsername",
    "departmentName",
    "location",
    "emailFrom",
    "subject",
    "ticketNumber",
    "username",
    "email",
    "brandName",
    "groupName",
    "interactionType",
    "eventType",
)

#: Spellings SmarterTrack's documentation also uses for a canonical input.
ALIASES: Mapping[str, str] = {"group": "groupName"}

#: Canonical inputs that hold a username: normalised in the context.
USERNAME_NAMES = ("loginUsername", "username")
_CANONICAL_KEYS = tuple((name, name.lower()) for name in CANONICAL_NAMES)
_CF_LENGTH = len(CUSTOM_FIELD_PREFIX)
_ARGS_LENGTH = len(ARGUMENT_PREFIX)

#: Every name a condition or template may use.
#: Set only when a sign-in code's template is rendered (``""`` otherwise).
SIGN_IN_CODE_NAMES = ("code", "minutes")

CONTEXT_NAMES: frozenset[str] = frozenset(
    (
        *CANONICAL_NAMES,
        "cf",
        "args",
        "variables",
        "eventName",
        "method",
        "user",
        "groups",
        "vars",
        *SIGN_IN_CODE_NAMES,
    )
)

V = TypeVar("V")


class CaseInsensitiveDict(dict[str, V]):
    """A read-mostly dict whose lookups ignore case; iteration keeps the names as given."""

    __slots__ = ("_folded",)

    def __init__(self, items: Iterable[tuple[str, V]] = ()) -> None:
        super().__init__()
        self._folded: dict[str, str] = {}
        for key, value in items:
            folded = key.lower()
            previous = self._folded.get(folded)
            if previous is not None and previous != key:
                super().__delitem__(previous)
            self._folded[folded] = key
            super().__setitem__(key, value)

    @classmethod
    def of_folded(cls, items: Sequence[tuple[str, str, V]]) -> CaseInsensitiveDict[V]:
        """A faster constructor from ``(name.lower(), name, value)`` triples whose names are
        unique ignoring case (the caller has folded them already)."""
        mapping: CaseInsensitiveDict[V] = dict.__new__(cls)
        dict.update(mapping, [(name, value) for _, name, value in items])
        mapping._folded = {folded: name for folded, name, _ in items}
        return mapping

    def __missing__(self, key: str) -> V:
        if isinstance(key, str):
            original = self._folded.get(key.lower())
            if original is not None:
                return super().__getitem__(original)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._folded

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        return default


class Values(tuple[str, ...]):
    """A directory attribute's values.

    Prints as the values joined by ``", "``; equals a string when it holds exactly
    that one value; ``in`` tests membership of one value.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return ", ".join(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return len(self) == 1 and self[0] == other
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = tuple.__hash__


class Names(tuple[str, ...]):
    """Group names: ``"Customers" in groups`` ignores case, as directories do."""

    _folded: frozenset[str]

    def __new__(cls, names: Iterable[str] = ()) -> Names:
        self = super().__new__(cls, names)
        self._folded = frozenset(name.lower() for name in self)
        return self

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and item.lower() in self._folded


def _event_type(raw: str | None) -> int | None:
    """``eventType`` as an integer; ``None`` when missing or malformed (the call layer
    answers a malformed one with ``Invalid Input`` before any rule runs)."""
    if not raw:
        return None
    try:
        return parse_whole_number("eventType", raw or "")
    except InvalidInput:
        return None


def user_mapping(identity: Identity | None) -> CaseInsensitiveDict[Any]:
    """The ``user`` of the context: attributes, then the identity's own fields over them."""
    if identity is None:
        return CaseInsensitiveDict()
    items: list[tuple[str, Any]] = [
        (name, Values(str(v) for v in values)) for name, values in identity.attributes.items()
    ]
    items.append(("username", identity.username))
    items.append(("email", identity.email or ""))
    items.append(("display_name", identity.display_name or ""))
    items.append(("dn", identity.dn or ""))
    return CaseInsensitiveDict(items)


_NO_VARS: CaseInsensitiveDict[str] = CaseInsensitiveDict()


def build_context(
    operation: Method,
    variables: InputVariables,
    identity: Identity | None,
    global_vars: CaseInsensitiveDict[str] = _NO_VARS,
) -> dict[str, Any]:
    """The context of one call (see the module docstring) with ``global_vars`` as ``vars``.
    Never contains a password."""
    sent = variables.by_folded_name  # folded name -> (name as sent, value); the last wins
    custom_fields: list[tuple[str, str, str]] = []  # (folded name, name, value)
    arguments: list[tuple[str, str, str]] = []
    plain: list[tuple[str, str, str]] = []
    for key, (name, value) in sent.items():
        if key.startswith(CUSTOM_FIELD_PREFIX) and len(key) > _CF_LENGTH:
            custom_fields.append((key[_CF_LENGTH:], name[_CF_LENGTH:], value))
        elif key.startswith(ARGUMENT_PREFIX) and len(key) > _ARGS_LENGTH:
            arguments.append((key[_ARGS_LENGTH:], name[_ARGS_LENGTH:], value))
        elif key not in SECRET_VARIABLES:
            plain.append((key, name, value))
    context: dict[str, Any] = {name: sent[key][1] if key in sent else "" for name, key in _CANONICAL_KEYS}
    for alias, name in ALIASES.items():
        if name.lower() not in sent and alias in sent:
            context[name] = sent[alias][1]
    for name in USERNAME_NAMES:
        if context[name]:
            context[name] = normalise_username(context[name])
    event_type = _event_type(context["eventType"])
    context["eventType"] = event_type
    context["eventName"] = event_name(event_type)
    context["method"] = operation.value
    context["cf"] = CaseInsensitiveDict.of_folded(custom_fields)
    context["args"] = CaseInsensitiveDict.of_folded(arguments)
    context["variables"] = CaseInsensitiveDict.of_folded(plain)
    context["user"] = user_mapping(identity)
    context["groups"] = Names(identity.groups if identity is not None else ())
    context["vars"] = global_vars
    for name in SIGN_IN_CODE_NAMES:
        context[name] = ""
    return context
