"""The rules model: what a rules file says, validated and typed.

A :class:`RulesFile` holds named :class:`ChannelEntry` entries (outbound destinations
used by ``notify``) and :class:`Rule` entries. A rule applies to one or more
operations (``method``), runs in ascending ``priority`` (equal priorities keep file
order), matches when its optional ``when`` expression is true, and then applies its
:class:`Actions`. Templates and expressions are kept as source text here; the engine
compiles them.

Every object converts back to the plain mapping it was read from
(:meth:`Rule.to_mapping`), which is what the database stores and ``rules export``
writes, so a file round-trips.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provider.channels.config import ChannelConfig
from provider.comms.templates import MessageTemplate
from provider.domain import ALL_METHODS, Method, Operation, RulesMethod

#: ``method: "*"``: every operation whose actions the rule's ``then`` can express.
ANY_METHOD = "*"

#: ``on_error``: what a rule that raises at run time does. A rule that can deny fails
#: closed (``deny``, its default: its denials apply); ``skip`` skips it, as every
#: other rule is skipped.
DENY = "deny"
SKIP = "skip"
ON_ERROR_VALUES: tuple[str, ...] = (DENY, SKIP)

#: Which action is valid for which operation (``RequestSignInCode`` takes ``allow`` and ``stop``).
ACTION_METHODS: Mapping[str, frozenset[Method]] = {
    "allow": frozenset(Operation) - {Operation.NOTIFY_EVENT_FIRED} | {RulesMethod.REQUEST_SIGN_IN_CODE},
    "allow_tickets": frozenset({Operation.GET_CUSTOM_FIELD_OPTIONS}),
    "allow_chats": frozenset({Operation.GET_CUSTOM_FIELD_OPTIONS}),
    "message": frozenset(Operation) - {Operation.NOTIFY_EVENT_FIRED},
    "set": frozenset(Operation) - {Operation.NOTIFY_EVENT_FIRED},
    "fields": frozenset({Operation.GET_CUSTOM_FIELD_OPTIONS}),
    "html": frozenset({Operation.GET_USER_DETAILS}),
    "notify": frozenset({Operation.NOTIFY_EVENT_FIRED}),
    "stop": frozenset(ALL_METHODS),
}

#: The order actions are written in (export) and applied in.
ACTION_ORDER: tuple[str, ...] = (
    "allow",
    "allow_tickets",
    "allow_chats",
    "message",
    "set",
    "fields",
    "html",
    "notify",
    "stop",
)

#: Output variables the provider itself writes from ``allow``/``allow_tickets``/``allow_chats``;
#: ``set`` may not write them.
RESERVED_OUTPUTS: Mapping[str, str] = {
    "authentication": "allow",
    "ticketcreation": "allow",
    "chatcreation": "allow",
    "canstarttickets": "allow_tickets",
    "canstartchats": "allow_chats",
}


@dataclass(frozen=True)
class FieldSpec:
    """One ``fields`` entry: what to change about a custom field (GetCustomFieldOptions).

    ``options`` (``list``) are templates; ``options_from`` (``list_from``) is an
    expression giving a list. ``None`` means "do not change".
    """

    name: str
    options: tuple[str, ...] | None = None
    options_from: str | None = None
    required: bool | None = None
    visible: bool | None = None
    lookup: bool = False

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.options is not None:
            out["list"] = list(self.options)
        if self.options_from is not None:
            out["list_from"] = self.options_from
        if self.required is not None:
            out["required"] = self.required
        if self.visible is not None:
            out["visible"] = self.visible
        if self.lookup:
            out["lookup"] = True
        return out


@dataclass(frozen=True)
class NotifySpec:
    """One ``notify`` entry: a channel name and its parameters (string leaves are templates).

    With ``template``, ``params`` are the entry's own keys and ``merged`` the template's
    parameters with them over it (what is rendered); ``html_params`` are rendered with
    HTML autoescaping (an email template's ``html``).
    """

    channel: str
    params: Mapping[str, Any] = field(default_factory=dict)
    template: str | None = None
    merged: Mapping[str, Any] | None = field(default=None, compare=False)
    html_params: tuple[str, ...] = field(default=(), compare=False)

    @property
    def effective_params(self) -> Mapping[str, Any]:
        """The parameters rendered for each event (the template's merged with the entry's)."""
        return self.merged if self.merged is not None else self.params

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"channel": self.channel}
        if self.template is not None:
            out["template"] = self.template
        out.update(self.params)
        return out


@dataclass(frozen=True)
class Actions:
    """The ``then`` of a rule. ``None``/empty means the action is absent.

    ``allow``, ``allow_tickets`` and ``allow_chats`` can only be ``False`` (rules deny;
    they never re-allow what another rule denied).
    """

    allow: bool | None = None
    allow_tickets: bool | None = None
    allow_chats: bool | None = None
    message: str | None = None
    set: tuple[tuple[str, str], ...] = ()
    fields: tuple[FieldSpec, ...] = ()
    html: str | None = None
    notify: tuple[NotifySpec, ...] = ()
    stop: bool = False

    def names(self) -> list[str]:
        """The actions present, in :data:`ACTION_ORDER`."""
        return [name for name in ACTION_ORDER if name in self.to_mapping()]

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.allow is not None:
            out["allow"] = self.allow
        if self.allow_tickets is not None:
            out["allow_tickets"] = self.allow_tickets
        if self.allow_chats is not None:
            out["allow_chats"] = self.allow_chats
        if self.message is not None:
            out["message"] = self.message
        if self.set:
            out["set"] = dict(self.set)
        if self.fields:
            out["fields"] = [f.to_mapping() for f in self.fields]
        if self.html is not None:
            out["html"] = self.html
        if self.notify:
            out["notify"] = [n.to_mapping() for n in self.notify]
        if self.stop:
            out["stop"] = True
        return out


@dataclass(frozen=True)
class Rule:
    """One rule.

    ``method`` is kept as written (a name, a list of names, or ``"*"``); ``methods``
    is what it resolves to. ``line`` is the rule's line in the file it came from
    (``None`` for rules read from the database). ``on_error`` is ``None`` when the file
    does not say (a rule that can deny then fails closed, see :data:`SKIP`).
    """

    name: str
    method: str | tuple[str, ...]
    methods: frozenset[Method]
    then: Actions
    when: str | None = None
    priority: int = 0
    enabled: bool = True
    description: str | None = None
    on_error: str | None = None
    line: int | None = field(default=None, compare=False)

    def to_mapping(self) -> dict[str, Any]:
        """The rule as a rules file writes it (keys in the documented order)."""
        out: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            out["description"] = self.description
        out["method"] = self.method if isinstance(self.method, str) else list(self.method)
        out["priority"] = self.priority
        if not self.enabled:
            out["enabled"] = False
        if self.when is not None:
            out["when"] = self.when
        if self.on_error is not None:
            out["on_error"] = self.on_error
        out["then"] = self.then.to_mapping()
        return out

    def method_names(self) -> list[str]:
        """The operations this rule applies to, in the documented order."""
        return [op.value for op in ALL_METHODS if op in self.methods]


@dataclass(frozen=True)
class ChannelEntry(ChannelConfig):
    """One ``channels:`` entry: a channel configuration, with the line it was written on."""

    line: int | None = field(default=None, compare=False)

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if not self.enabled:
            out["enabled"] = False
        out.update(self.settings)
        return out


@dataclass(frozen=True)
class RulesFile:
    """A whole rules file, validated."""

    rules: tuple[Rule, ...] = ()
    channels: tuple[ChannelEntry, ...] = ()
    templates: tuple[MessageTemplate, ...] = ()
    variables: tuple[tuple[str, str], ...] = ()

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.variables:
            out["variables"] = dict(self.variables)
        if self.channels:
            out["channels"] = {c.name: c.to_mapping() for c in self.channels}
        if self.templates:
            out["templates"] = {t.name: t.to_mapping() for t in self.templates}
        out["rules"] = [r.to_mapping() for r in self.rules]
        return out
