"""The checks of a rule's ``then:`` actions, and the problem list every rules-file check adds to.

:class:`ActionChecks` collects :class:`~provider.errors.RuleProblem` entries (each with
its line and rule) rather than stopping at the first, and builds the model's
:class:`~provider.rules.model.Actions` from what is valid: the deny flags, ``message``,
``html``, ``stop``, ``set``, ``fields`` and ``notify`` (its channel, and its parameters
checked by the channel's type). The loader's validator (:mod:`provider.rules.loader`)
extends it with the checks of rules and channels.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from provider.channels.registry import normalise_notify_params, validate_notify_params
from provider.channels.validation import DEFAULT_SECRET_VARS, json_data
from provider.comms.templates import MessageTemplate
from provider.errors import RuleProblem
from provider.rules.environment import is_json_value
from provider.rules.model import ACTION_ORDER, RESERVED_OUTPUTS, Actions, FieldSpec, NotifySpec
from provider.rules.yaml_lines import duplicate_keys, line_of

FIELD_KEYS = ("name", "list", "list_from", "required", "visible", "lookup")
YAML_BOOLEAN_HINT = "YAML reads unquoted yes/no/true/false/on/off as a boolean: put the text in quotes"

#: Channels ``notify`` may use besides the file's own: name -> type, or a callable giving that.
ChannelTypes = Mapping[str, str] | Callable[[], Mapping[str, str]]


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the option closest to ``value``; empty when none is close."""
    close = difflib.get_close_matches(value, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_type(value: Any) -> str:
    """How a problem names the kind of ``value`` (``a mapping``, ``the boolean true``, ``nothing``)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


class ActionChecks:
    """Checks a rule's actions, collecting every problem in :attr:`problems`."""

    def __init__(
        self, stored_channels: ChannelTypes, secret_vars: Sequence[str] = DEFAULT_SECRET_VARS
    ) -> None:
        self.problems: list[RuleProblem] = []
        self._secret_vars = tuple(secret_vars)
        self._stored_channels = stored_channels
        self._stored_cache: Mapping[str, str] | None = None
        # For the rule being checked: model index -> index as written, per list action.
        self.raw_index: dict[str, list[int]] = {}
        #: Templates ``notify`` may name (the file's, and stored ones when importing without replace).
        self.templates_by_name: dict[str, MessageTemplate] = {}
        #: Templates of the file with problems (already reported; a notify naming one adds none).
        self.broken_templates: set[str] = set()

    def raw_path(self, path: tuple[str | int, ...]) -> tuple[str | int, ...]:
        """``path`` inside the rule as written (invalid list entries are not in the model)."""
        if len(path) > 2 and path[0] == "then" and isinstance(path[2], int):
            indices = self.raw_index.get(str(path[1]), [])
            if path[2] < len(indices):
                return (path[0], path[1], indices[path[2]], *path[3:])
        return path

    def add(self, message: str, *, line: int | None, rule: str | None = None) -> None:
        self.problems.append(RuleProblem(message=message, rule=rule, line=line))

    def stored_channels(self) -> Mapping[str, str]:
        if self._stored_cache is None:
            source = self._stored_channels
            self._stored_cache = source() if callable(source) else source
        return self._stored_cache

    def unknown_keys(
        self, node: Mapping[Any, Any], known: Iterable[str], what: str, rule: str | None
    ) -> None:
        known = tuple(known)
        for key, line in duplicate_keys(node):
            self.add(f"{what}: {key!r} is given more than once", line=line, rule=rule)
        for key in node:
            if key not in known:
                self.add(
                    f"{what}: unknown key {key!r}{did_you_mean(str(key), known)} (known: {', '.join(known)})",
                    line=line_of(node, key),
                    rule=rule,
                )

    def then(
        self, node: Any, line: int | None, rule: str | None, channel_names: Mapping[str, str]
    ) -> Actions | None:
        if not isinstance(node, Mapping):
            self.add(f"then must be a mapping of actions, not {describe_type(node)}", line=line, rule=rule)
            return None
        self.unknown_keys(node, ACTION_ORDER, "then", rule)
        if not node:
            self.add(f"then has no actions (known: {', '.join(ACTION_ORDER)})", line=line, rule=rule)
        flags: dict[str, bool | None] = {}
        for flag in ("allow", "allow_tickets", "allow_chats"):
            flags[flag] = None
            if flag not in node:
                continue
            if node[flag] is False:
                flags[flag] = False
            elif node[flag] is True:
                self.add(
                    f"{flag}: true has no effect: rules only deny, and a deny is final. "
                    "To exempt calls from a later deny, give them a rule with stop: true at a lower priority",
                    line=line_of(node, flag),
                    rule=rule,
                )
            else:
                self.add(
                    f"{flag} must be false, not {describe_type(node[flag])}",
                    line=line_of(node, flag),
                    rule=rule,
                )
        message = self.text(node, "message", rule)
        html = self.text(node, "html", rule)
        stop = node.get("stop", False)
        if not isinstance(stop, bool):
            self.add(
                f"stop must be true or false, not {describe_type(stop)}",
                line=line_of(node, "stop"),
                rule=rule,
            )
            stop = False
        set_values = self.set_values(node.get("set"), line_of(node, "set"), rule) if "set" in node else ()
        fields = self.fields(node.get("fields"), line_of(node, "fields"), rule) if "fields" in node else ()
        notify = (
            self.notify(node.get("notify"), line_of(node, "notify"), rule, channel_names)
            if "notify" in node
            else ()
        )
        return Actions(
            allow=flags["allow"],
            allow_tickets=flags["allow_tickets"],
            allow_chats=flags["allow_chats"],
            message=message,
            set=set_values,
            fields=fields,
            html=html,
            notify=notify,
            stop=stop,
        )

    def text(self, node: Mapping[Any, Any], key: str, rule: str | None) -> str | None:
        if key not in node:
            return None
        value = node[key]
        if not isinstance(value, str):
            hint = f"; {YAML_BOOLEAN_HINT}" if isinstance(value, bool) else ""
            self.add(
                f"{key} must be text, not {describe_type(value)}{hint}", line=line_of(node, key), rule=rule
            )
            return None
        return value

    def scalar_text(self, value: Any, what: str, line: int | None, rule: str | None) -> str | None:
        """Text, or a number written without quotes (kept as its text)."""
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            self.add(f"{what} is {describe_type(value)}; {YAML_BOOLEAN_HINT}", line=line, rule=rule)
            return None
        if isinstance(value, int | float):
            return str(value)
        self.add(f"{what} must be text, not {describe_type(value)}", line=line, rule=rule)
        return None

    def set_values(self, node: Any, line: int | None, rule: str | None) -> tuple[tuple[str, str], ...]:
        if not isinstance(node, Mapping) or not node:
            self.add(
                f"set must be a mapping of output variables to values, not {describe_type(node)}",
                line=line,
                rule=rule,
            )
            return ()
        for key, dup_line in duplicate_keys(node):
            self.add(f"set: {key!r} is given more than once", line=dup_line, rule=rule)
        seen: set[str] = set()
        values = []
        for name, value in node.items():
            key_line = line_of(node, name)
            if not isinstance(name, str) or not name.strip() or "=" in name or name != name.strip():
                self.add(
                    f"set: {name!r} is not a valid variable name (no '=', no surrounding spaces)",
                    line=key_line,
                    rule=rule,
                )
                continue
            if name.lower() in RESERVED_OUTPUTS:
                self.add(
                    f"set: {name} is written by the provider; "
                    f"use {RESERVED_OUTPUTS[name.lower()]}: false instead",
                    line=key_line,
                    rule=rule,
                )
                continue
            if name.lower() in seen:
                self.add(
                    f"set: {name!r} is given more than once (names ignore case)", line=key_line, rule=rule
                )
                continue
            seen.add(name.lower())
            text = self.scalar_text(value, f"set: the value of {name!r}", key_line, rule)
            if text is not None:
                values.append((name, text))
        return tuple(values)

    def list_entries(
        self, action: str, node: Any, line: int | None, rule: str | None, *, items: str, entry_needs: str
    ) -> Iterator[tuple[int, Mapping[Any, Any], int | None]]:
        """The mapping entries of the list action ``action``: (index as written, entry, line).

        Adds a problem when ``node`` is not a non-empty list (of ``items``), and one for each
        entry that is not a mapping (with ``entry_needs``), as the entries are reached.
        """
        if not isinstance(node, list) or not node:
            self.add(f"{action} must be a list of {items}, not {describe_type(node)}", line=line, rule=rule)
            return
        self.raw_index[action] = []
        for i, entry in enumerate(node):
            entry_line = line_of(node, i)
            if isinstance(entry, Mapping):
                yield i, entry, entry_line
            else:
                self.add(
                    f"{action}: each entry must be a mapping with {entry_needs}, not {describe_type(entry)}",
                    line=entry_line,
                    rule=rule,
                )

    def fields(self, node: Any, line: int | None, rule: str | None) -> tuple[FieldSpec, ...]:
        specs = []
        seen: set[str] = set()
        entries = self.list_entries("fields", node, line, rule, items="custom fields", entry_needs="a name")
        for i, entry, entry_line in entries:
            start = len(self.problems)
            self.unknown_keys(entry, FIELD_KEYS, "field", rule)
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                self.add(
                    "fields: each entry needs a 'name' (the custom field's name in SmarterTrack)",
                    line=entry_line,
                    rule=rule,
                )
                continue
            if name.lower() in seen:
                self.add(f"fields: {name!r} is given more than once", line=entry_line, rule=rule)
            seen.add(name.lower())
            options = self.field_options(entry, name, rule) if "list" in entry else None
            options_from = entry.get("list_from")
            if "list_from" in entry and (not isinstance(options_from, str) or not options_from.strip()):
                self.add(
                    f"field {name!r}: list_from must be an expression in text",
                    line=line_of(entry, "list_from"),
                    rule=rule,
                )
            if "list" in entry and "list_from" in entry:
                self.add(
                    f"field {name!r}: give either list or list_from, not both",
                    line=line_of(entry, "list_from"),
                    rule=rule,
                )
            flags = self.field_flags(entry, name, rule)
            if not any(k in entry for k in ("list", "list_from", "required", "visible", "lookup")):
                self.add(
                    f"field {name!r} changes nothing: give list, list_from, required, visible or lookup",
                    line=entry_line,
                    rule=rule,
                )
            if len(self.problems) > start:
                continue
            self.raw_index["fields"].append(i)
            specs.append(
                FieldSpec(
                    name=name,
                    options=options,
                    options_from=options_from if isinstance(options_from, str) else None,
                    required=flags["required"],
                    visible=flags["visible"],
                    lookup=bool(flags["lookup"]),
                )
            )
        return tuple(specs)

    def field_options(self, entry: Mapping[Any, Any], name: str, rule: str | None) -> tuple[str, ...] | None:
        """A field's ``list`` of options as text (``None`` when it is not a list)."""
        raw = entry["list"]
        if not isinstance(raw, list):
            self.add(
                f"field {name!r}: list must be a list of options, not {describe_type(raw)}",
                line=line_of(entry, "list"),
                rule=rule,
            )
            return None
        texts = [
            self.scalar_text(v, f"field {name!r}: option {j + 1}", line_of(raw, j), rule)
            for j, v in enumerate(raw)
        ]
        return tuple(t for t in texts if t is not None)

    def field_flags(self, entry: Mapping[Any, Any], name: str, rule: str | None) -> dict[str, bool | None]:
        """A field's ``required``, ``visible`` and ``lookup`` (``None`` when left out or not a boolean)."""
        flags: dict[str, bool | None] = {}
        for key in ("required", "visible", "lookup"):
            value = entry.get(key)
            if key in entry and not isinstance(value, bool):
                self.add(f"field {name!r}: {key} must be true or false", line=line_of(entry, key), rule=rule)
                value = None
            flags[key] = value
        return flags

    def notify(
        self, node: Any, line: int | None, rule: str | None, channel_names: Mapping[str, str]
    ) -> tuple[NotifySpec, ...]:
        specs = []
        entries = self.list_entries(
            "notify", node, line, rule, items="entries with a channel", entry_needs="a channel"
        )
        for i, entry, entry_line in entries:
            for key, dup_line in duplicate_keys(entry):
                self.add(f"notify: {key!r} is given more than once", line=dup_line, rule=rule)
            channel = entry.get("channel")
            if not isinstance(channel, str) or not channel.strip():
                self.add(
                    "notify: each entry needs a 'channel' (a name from channels:)", line=entry_line, rule=rule
                )
                continue
            channel_type = channel_names.get(channel) or self.stored_channels().get(channel)
            if channel_type is None:
                known = sorted(set(channel_names) | set(self.stored_channels()))
                self.add(
                    f"notify: unknown channel {channel!r}{did_you_mean(channel, known)} "
                    f"(define it under channels:; known: {', '.join(known) or 'none'})",
                    line=line_of(entry, "channel"),
                    rule=rule,
                )
                continue
            template = self.notify_template(entry, channel_type, rule) if "template" in entry else None
            if template is False:
                continue
            params = {k: v for k, v in entry.items() if k not in {"channel", "template"}}
            for problem in validate_notify_params(channel_type, params):
                self.add(f"notify: {problem}", line=line_of(entry, "channel"), rule=rule)
            params, normalise_problems = normalise_notify_params(channel_type, params)
            for problem in normalise_problems:
                self.add(f"notify: {problem}", line=line_of(entry, "params"), rule=rule)
            bad = [k for k, v in params.items() if not isinstance(k, str) or not is_json_value(v)]
            for key in bad:
                self.add(
                    f"notify: parameter {key!r} must be text, a number, a boolean, a list or a mapping",
                    line=line_of(entry, key),
                    rule=rule,
                )
            if not bad:
                self.raw_index["notify"].append(i)
                specs.append(_notify_spec(channel, json_data(params), template))
        return tuple(specs)

    def notify_template(
        self, entry: Mapping[Any, Any], channel_type: str, rule: str | None
    ) -> MessageTemplate | bool:
        """The template a notify entry names; ``False`` (a problem added) when it cannot be used."""
        name = entry["template"]
        line = line_of(entry, "template")
        if not isinstance(name, str) or not name.strip():
            self.add("notify: template must be a template name (text)", line=line, rule=rule)
            return False
        if name in self.broken_templates:
            return False  # its own problems are reported at the template
        template = self.templates_by_name.get(name)
        if template is None:
            known = sorted(self.templates_by_name)
            self.add(
                f"notify: unknown template {name!r}{did_you_mean(name, known)} "
                f"(define it under templates:; known: {', '.join(known) or 'none'})",
                line=line,
                rule=rule,
            )
            return False
        if template.kind != channel_type:
            self.add(
                f"notify: template {name!r} is written for {template.kind}, "
                f"but channel {entry.get('channel')!r} is {channel_type}",
                line=line,
                rule=rule,
            )
            return False
        return template


def _notify_spec(channel: str, params: dict[str, Any], template: MessageTemplate | bool | None) -> NotifySpec:
    """A notify entry; with a template, its parameters merged under the entry's own."""
    if not isinstance(template, MessageTemplate):
        return NotifySpec(channel=channel, params=params)
    merged = {**json_data(dict(template.params)), **params}
    return NotifySpec(
        channel=channel,
        params=params,
        template=template.name,
        merged=merged,
        html_params=template.html_params,
    )
