"""Reading and validating rules files (YAML).

:func:`parse_rules` reads a whole file and checks everything before anything is
used: the YAML itself, unknown or repeated keys, names, methods, priorities, every
action's shape and whether it is valid for the rule's methods, channel settings
(their shape by :func:`provider.channels.validation.plain_settings`, the rest by
:func:`provider.channels.registry.validate_channel_settings`, including which
environment variables ``${VAR}`` may name: the same checks the worker applies), ``notify`` channels,
and that every expression and template compiles in the sandbox. It raises
:class:`~provider.errors.RulesFileError` listing *every* problem with its line number
and rule name; the caller writes nothing then.

Anchors and aliases (``&x``/``*x``) are refused (they do not survive an export, and
aliases can multiply a file's size); YAML dates are read as text.

The format is documented in ``rules/README.md``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent, NodeEvent

from provider.channels.registry import (
    channel_missing_variables,
    normalise_notify_params,
    validate_channel_settings,
    validate_notify_params,
)
from provider.channels.validation import DEFAULT_SECRET_VARS, plain_settings
from provider.domain import Operation
from provider.errors import RuleProblem, RulesFileError
from provider.rules.engine import RuleCompileError, compile_rule
from provider.rules.environment import is_json_value
from provider.rules.model import (
    ACTION_METHODS,
    ACTION_ORDER,
    ANY_METHOD,
    DENY,
    ON_ERROR_VALUES,
    RESERVED_OUTPUTS,
    Actions,
    ChannelEntry,
    FieldSpec,
    NotifySpec,
    Rule,
    RulesFile,
)

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_NAME_LENGTH = 200  # rules.name
MAX_CHANNEL_NAME_LENGTH = 100  # channels.name
NAME_PATTERN = re.compile(r"^[\w][\w .:@/+-]*$")
PRIORITY_LIMIT = 1_000_000_000

TOP_KEYS = ("channels", "rules")
RULE_KEYS = ("name", "description", "method", "priority", "enabled", "when", "on_error", "then")
FIELD_KEYS = ("name", "list", "list_from", "required", "visible", "lookup")
CHANNEL_RESERVED = ("type", "enabled")
METHOD_NAMES = tuple(op.value for op in Operation)

YAML_BOOLEAN_HINT = "YAML reads unquoted yes/no/true/false/on/off as a boolean: put the text in quotes"

#: Channels ``notify`` may use besides the file's own: name -> type, or a callable giving that.
ChannelTypes = Mapping[str, str] | Callable[[], Mapping[str, str]]


# --- YAML with line numbers -------------------------------------------------------


class LineMapping(dict[Any, Any]):
    """A YAML mapping that remembers where it and each of its keys are (1-based lines)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        self.duplicates: list[tuple[Any, int]] = []


class LineSequence(list[Any]):
    """A YAML sequence that remembers where it and each of its items are."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


class _Loader(yaml.SafeLoader):
    """SafeLoader that records lines, refuses anchors and aliases, and keeps dates as text."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent) or (isinstance(event, NodeEvent) and event.anchor is not None):
            raise ComposerError(
                None,
                None,
                "anchors and aliases (&name, *name) are not supported in rules files",
                event.start_mark,  # type: ignore[arg-type]
            )
        return super().compose_node(parent, index)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Iterable[LineMapping]:
    data = LineMapping(node.start_mark.line + 1)
    yield data
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str | int | float | bool) and key is not None:
            data.duplicates.append((f"a key of type {type(key).__name__}", line))
            continue
        if key in data:
            data.duplicates.append((key, line))
            continue
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = line


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> Iterable[LineSequence]:
    data = LineSequence(node.start_mark.line + 1)
    yield data
    for child in node.value:
        data.append(loader.construct_object(child, deep=True))
        data.item_lines.append(child.start_mark.line + 1)


def _construct_timestamp_as_text(loader: _Loader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp_as_text)


def _can_deny(actions: Actions) -> bool:
    return False in (actions.allow, actions.allow_tickets, actions.allow_chats)


def _line_of(node: Any, key: Any = None) -> int | None:
    """The line of ``node`` (or of ``key`` in it); ``None`` for plain dicts and lists."""
    if key is not None and isinstance(node, LineMapping):
        return node.key_lines.get(key, node.line)
    if isinstance(key, int) and isinstance(node, LineSequence) and 0 <= key < len(node.item_lines):
        return node.item_lines[key]
    return getattr(node, "line", None)


def _item_line(node: list[Any], index: int) -> int | None:
    return _line_of(node, index)


def _duplicates(node: Mapping[Any, Any]) -> list[tuple[Any, int]]:
    return node.duplicates if isinstance(node, LineMapping) else []


def _line_at(root: Any, path: Iterable[str | int]) -> int | None:
    """The line of the value at ``path`` inside ``root`` (the deepest known line)."""
    node, line = root, _line_of(root)
    for step in path:
        in_mapping = isinstance(node, Mapping) and step in node
        in_list = isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
        if not (in_mapping or in_list):
            break
        line = _line_of(node, step)
        node = node[step]
    return line


# --- validation -------------------------------------------------------------------


def _hint(value: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


class _Validator:
    """Walks one parsed file, building the model and collecting every problem."""

    def __init__(
        self, stored_channels: ChannelTypes, secret_vars: Sequence[str] = DEFAULT_SECRET_VARS
    ) -> None:
        self.problems: list[RuleProblem] = []
        self._secret_vars = tuple(secret_vars)
        self._stored_channels = stored_channels
        self._stored_cache: Mapping[str, str] | None = None
        # For the rule being checked: model index -> index as written, per list action.
        self.raw_index: dict[str, list[int]] = {}

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
        for key, line in _duplicates(node):
            self.add(f"{what}: {key!r} is given more than once", line=line, rule=rule)
        for key in node:
            if key not in known:
                self.add(
                    f"{what}: unknown key {key!r}{_hint(str(key), known)} (known: {', '.join(known)})",
                    line=_line_of(node, key),
                    rule=rule,
                )

    def name(
        self,
        value: Any,
        what: str,
        line: int | None,
        rule: str | None = None,
        *,
        limit: int = MAX_NAME_LENGTH,
    ) -> str | None:
        if not isinstance(value, str) or not value.strip():
            hint = f"; {YAML_BOOLEAN_HINT}" if isinstance(value, bool) else ""
            self.add(f"{what} must be a non-empty text, not {_type_name(value)}{hint}", line=line, rule=rule)
            return None
        if len(value) > limit:
            self.add(f"{what} is longer than {limit} characters", line=line, rule=rule)
            return None
        if not NAME_PATTERN.match(value) or value != value.strip():
            self.add(
                f"{what} {value!r} may only hold letters, digits, spaces and . : @ / + - _ "
                "and must start with a letter or digit",
                line=line,
                rule=rule,
            )
            return None
        return value

    # --- channels

    def channels(self, node: Any, line: int | None) -> list[ChannelEntry]:
        if node is None:
            return []
        if not isinstance(node, Mapping):
            self.add(f"channels must be a mapping of channel names, not {_type_name(node)}", line=line)
            return []
        for key, dup_line in _duplicates(node):
            self.add(f"channel {key!r} is defined more than once", line=dup_line)
        specs = []
        for name, body in node.items():
            spec = self.channel(name, body, _line_of(node, name))
            if spec is not None:
                specs.append(spec)
        return specs

    def channel(self, name: Any, body: Any, line: int | None) -> ChannelEntry | None:
        checked = self.name(name, "a channel name", line, limit=MAX_CHANNEL_NAME_LENGTH)
        if checked is None:
            return None
        what = f"channel {checked!r}"
        if not isinstance(body, Mapping):
            self.add(f"{what} must be a mapping with at least 'type', not {_type_name(body)}", line=line)
            return None
        for key, dup_line in _duplicates(body):
            self.add(f"{what}: {key!r} is given more than once", line=dup_line)
        type_name = body.get("type")
        if not isinstance(type_name, str) or not type_name.strip():
            self.add(f"{what} needs a 'type' (text)", line=_line_of(body, "type"))
            return None
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            self.add(f"{what}: enabled must be true or false", line=_line_of(body, "enabled"))
            enabled = True
        settings, shape_problems = plain_settings(
            {k: v for k, v in body.items() if k not in CHANNEL_RESERVED}
        )
        for key, problem in shape_problems:
            self.add(f"{what}: {problem}", line=_line_of(body, key))
        if not shape_problems:
            for problem in validate_channel_settings(type_name, settings, secret_vars=self._secret_vars):
                self.add(f"{what}: {problem}", line=line)
        return ChannelEntry(name=checked, type=type_name, settings=settings, enabled=enabled, line=line)

    # --- rules

    def rules(self, node: Any, line: int | None, channel_names: Mapping[str, str]) -> list[Rule]:
        if not isinstance(node, list):
            self.add(f"rules must be a list of rules, not {_type_name(node)}", line=line)
            return []
        rules: list[Rule] = []
        seen: dict[str, int | None] = {}
        for i, body in enumerate(node):
            rule_line = _item_line(node, i)
            raw_name = body.get("name") if isinstance(body, Mapping) else None
            if isinstance(raw_name, str) and raw_name in seen:
                self.add(
                    f"the name is already used by the rule on line {seen[raw_name]}",
                    line=rule_line,
                    rule=raw_name,
                )
                continue
            if isinstance(raw_name, str):
                seen[raw_name] = rule_line
            rule = self.rule(body, rule_line, channel_names)
            if rule is not None:
                rules.append(rule)
        return rules

    def rule(
        self, body: Any, line: int | None, channel_names: Mapping[str, str], *, check_templates: bool = True
    ) -> Rule | None:
        if not isinstance(body, Mapping):
            self.add(f"a rule must be a mapping, not {_type_name(body)}", line=line)
            return None
        start = len(self.problems)
        raw_name = body.get("name")
        name = self.name(raw_name, "the rule name", _line_of(body, "name"))
        label = name if name is not None else (raw_name if isinstance(raw_name, str) else None)
        self.unknown_keys(body, RULE_KEYS, "rule", label)

        description = body.get("description")
        if description is not None and not isinstance(description, str):
            self.add("description must be text", line=_line_of(body, "description"), rule=label)
            description = None

        priority = body.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            self.add(
                f"priority must be a whole number, not {_type_name(priority)}",
                line=_line_of(body, "priority"),
                rule=label,
            )
            priority = 0
        elif abs(priority) > PRIORITY_LIMIT:
            self.add(
                f"priority must be between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT}",
                line=_line_of(body, "priority"),
                rule=label,
            )

        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            self.add("enabled must be true or false", line=_line_of(body, "enabled"), rule=label)
            enabled = True

        when = body.get("when")
        if "when" in body and (not isinstance(when, str) or not when.strip()):
            hint = " (leave 'when' out to always match)" if isinstance(when, bool) else ""
            self.add(
                f"when must be an expression in text, not {_type_name(when)}{hint}",
                line=_line_of(body, "when"),
                rule=label,
            )
            when = None

        on_error = body.get("on_error")
        if "on_error" in body and on_error not in ON_ERROR_VALUES:
            self.add(
                f"on_error must be one of {', '.join(ON_ERROR_VALUES)}, not {on_error!r}",
                line=_line_of(body, "on_error"),
                rule=label,
            )
            on_error = None

        method, methods = self.method(body, label)
        then = body.get("then")
        actions = self.then(then, _line_of(body, "then"), label, channel_names) if "then" in body else None
        if "then" not in body:
            self.add("a rule needs 'then' (what to do when it matches)", line=line, rule=label)
        if on_error == DENY and actions is not None and not _can_deny(actions):
            self.add(
                "on_error: deny needs a rule that denies (allow, allow_tickets or allow_chats: false)",
                line=_line_of(body, "on_error"),
                rule=label,
            )
        if actions is not None and method is not None:
            methods = self.check_actions(actions, method, methods, _line_of(body, "method"), label)
        if actions is not None and check_templates:
            # Compile what is there even when other parts are wrong: report everything at once.
            provisional = Rule(
                name=label or "?", method=ANY_METHOD, methods=frozenset(), then=actions, when=when, line=line
            )
            try:
                compile_rule(provisional)
            except RuleCompileError as exc:
                for path, message in exc.problems:
                    raw = self.raw_path(path)
                    self.add(
                        f"{'.'.join(str(p) for p in raw)}: {message}",
                        line=_line_at(body, raw),
                        rule=label,
                    )
        if len(self.problems) > start or name is None or method is None or actions is None or not methods:
            return None
        return Rule(
            name=name,
            description=description,
            method=method,
            methods=frozenset(methods),
            priority=priority,
            enabled=enabled,
            when=when,
            on_error=on_error,
            then=actions,
            line=line,
        )

    def method(
        self, body: Mapping[Any, Any], rule: str | None
    ) -> tuple[str | tuple[str, ...] | None, set[Operation]]:
        line = _line_of(body, "method")
        if "method" not in body:
            self.add(
                f"a rule needs 'method' (one of {', '.join(METHOD_NAMES)}, a list, or '*')",
                line=_line_of(body),
                rule=rule,
            )
            return None, set()
        value = body["method"]
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            self.add("method must be an operation name, a list of them, or '*'", line=line, rule=rule)
            return None, set()
        if ANY_METHOD in names:
            if len(names) > 1:
                self.add("'*' already means every method; do not list others with it", line=line, rule=rule)
                return None, set()
            return ANY_METHOD, set(Operation)
        methods: set[Operation] = set()
        ok = True
        for n in names:
            if n in METHOD_NAMES:
                if Operation(n) in methods:
                    self.add(f"method {n!r} is listed twice", line=line, rule=rule)
                    ok = False
                methods.add(Operation(n))
            else:
                self.add(
                    f"unknown method {n!r}{_hint(n, METHOD_NAMES)} (known: {', '.join(METHOD_NAMES)}, '*')",
                    line=line,
                    rule=rule,
                )
                ok = False
        if not ok:
            return None, set()
        return (value if isinstance(value, str) else tuple(names)), methods

    def check_actions(
        self,
        actions: Actions,
        method: str | tuple[str, ...],
        methods: set[Operation],
        line: int | None,
        rule: str | None,
    ) -> set[Operation]:
        names = actions.names()
        if method == ANY_METHOD:
            # '*' narrows to the operations that support every action of the rule.
            narrowed = set(Operation)
            for action in names:
                narrowed &= ACTION_METHODS[action]
            if not narrowed:
                self.add(
                    f"no method supports all of: {', '.join(names)}; split the rule", line=line, rule=rule
                )
            return narrowed
        for action in names:
            for op in sorted(methods - ACTION_METHODS[action], key=lambda o: METHOD_NAMES.index(o.value)):
                allowed = ", ".join(o.value for o in Operation if o in ACTION_METHODS[action])
                self.add(f"{action!r} is not valid for {op.value} (only for {allowed})", line=line, rule=rule)
        return methods

    def then(
        self, node: Any, line: int | None, rule: str | None, channel_names: Mapping[str, str]
    ) -> Actions | None:
        if not isinstance(node, Mapping):
            self.add(f"then must be a mapping of actions, not {_type_name(node)}", line=line, rule=rule)
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
                    line=_line_of(node, flag),
                    rule=rule,
                )
            else:
                self.add(
                    f"{flag} must be false, not {_type_name(node[flag])}",
                    line=_line_of(node, flag),
                    rule=rule,
                )
        message = self.text(node, "message", rule)
        html = self.text(node, "html", rule)
        stop = node.get("stop", False)
        if not isinstance(stop, bool):
            self.add(
                f"stop must be true or false, not {_type_name(stop)}", line=_line_of(node, "stop"), rule=rule
            )
            stop = False
        set_values = self.set_values(node.get("set"), _line_of(node, "set"), rule) if "set" in node else ()
        fields = self.fields(node.get("fields"), _line_of(node, "fields"), rule) if "fields" in node else ()
        notify = (
            self.notify(node.get("notify"), _line_of(node, "notify"), rule, channel_names)
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
                f"{key} must be text, not {_type_name(value)}{hint}", line=_line_of(node, key), rule=rule
            )
            return None
        return value

    def scalar_text(self, value: Any, what: str, line: int | None, rule: str | None) -> str | None:
        """Text, or a number written without quotes (kept as its text)."""
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            self.add(f"{what} is {_type_name(value)}; {YAML_BOOLEAN_HINT}", line=line, rule=rule)
            return None
        if isinstance(value, int | float):
            return str(value)
        self.add(f"{what} must be text, not {_type_name(value)}", line=line, rule=rule)
        return None

    def set_values(self, node: Any, line: int | None, rule: str | None) -> tuple[tuple[str, str], ...]:
        if not isinstance(node, Mapping) or not node:
            self.add(
                f"set must be a mapping of output variables to values, not {_type_name(node)}",
                line=line,
                rule=rule,
            )
            return ()
        for key, dup_line in _duplicates(node):
            self.add(f"set: {key!r} is given more than once", line=dup_line, rule=rule)
        seen: set[str] = set()
        values = []
        for name, value in node.items():
            key_line = _line_of(node, name)
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

    def fields(self, node: Any, line: int | None, rule: str | None) -> tuple[FieldSpec, ...]:
        if not isinstance(node, list) or not node:
            self.add(f"fields must be a list of custom fields, not {_type_name(node)}", line=line, rule=rule)
            return ()
        specs = []
        self.raw_index["fields"] = []
        seen: set[str] = set()
        for i, entry in enumerate(node):
            entry_line = _item_line(node, i)
            if not isinstance(entry, Mapping):
                self.add(
                    f"fields: each entry must be a mapping with a name, not {_type_name(entry)}",
                    line=entry_line,
                    rule=rule,
                )
                continue
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
            options = None
            if "list" in entry:
                raw = entry["list"]
                if not isinstance(raw, list):
                    self.add(
                        f"field {name!r}: list must be a list of options, not {_type_name(raw)}",
                        line=_line_of(entry, "list"),
                        rule=rule,
                    )
                else:
                    texts = [
                        self.scalar_text(v, f"field {name!r}: option {j + 1}", _item_line(raw, j), rule)
                        for j, v in enumerate(raw)
                    ]
                    options = tuple(t for t in texts if t is not None)
            options_from = entry.get("list_from")
            if "list_from" in entry and (not isinstance(options_from, str) or not options_from.strip()):
                self.add(
                    f"field {name!r}: list_from must be an expression in text",
                    line=_line_of(entry, "list_from"),
                    rule=rule,
                )
            if "list" in entry and "list_from" in entry:
                self.add(
                    f"field {name!r}: give either list or list_from, not both",
                    line=_line_of(entry, "list_from"),
                    rule=rule,
                )
            flags: dict[str, bool | None] = {}
            for key in ("required", "visible", "lookup"):
                value = entry.get(key)
                if key in entry and not isinstance(value, bool):
                    self.add(
                        f"field {name!r}: {key} must be true or false", line=_line_of(entry, key), rule=rule
                    )
                    value = None
                flags[key] = value
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

    def notify(
        self, node: Any, line: int | None, rule: str | None, channel_names: Mapping[str, str]
    ) -> tuple[NotifySpec, ...]:
        if not isinstance(node, list) or not node:
            self.add(
                f"notify must be a list of entries with a channel, not {_type_name(node)}",
                line=line,
                rule=rule,
            )
            return ()
        specs = []
        self.raw_index["notify"] = []
        for i, entry in enumerate(node):
            entry_line = _item_line(node, i)
            if not isinstance(entry, Mapping):
                self.add(
                    f"notify: each entry must be a mapping with a channel, not {_type_name(entry)}",
                    line=entry_line,
                    rule=rule,
                )
                continue
            for key, dup_line in _duplicates(entry):
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
                    f"notify: unknown channel {channel!r}{_hint(channel, known)} "
                    f"(define it under channels:; known: {', '.join(known) or 'none'})",
                    line=_line_of(entry, "channel"),
                    rule=rule,
                )
                continue
            params = {k: v for k, v in entry.items() if k != "channel"}
            for problem in validate_notify_params(channel_type, params):
                self.add(f"notify: {problem}", line=_line_of(entry, "channel"), rule=rule)
            params, normalise_problems = normalise_notify_params(channel_type, params)
            for problem in normalise_problems:
                self.add(f"notify: {problem}", line=_line_of(entry, "params"), rule=rule)
            bad = [k for k, v in params.items() if not isinstance(k, str) or not is_json_value(v)]
            for key in bad:
                self.add(
                    f"notify: parameter {key!r} must be text, a number, a boolean, a list or a mapping",
                    line=_line_of(entry, key),
                    rule=rule,
                )
            if not bad:
                self.raw_index["notify"].append(i)
                specs.append(NotifySpec(channel=channel, params=_plain(params)))
        return tuple(specs)


def _plain(value: Any) -> Any:
    """``value`` with the line-tracking containers replaced by plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _read_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = exc.problem or exc.context or "invalid YAML"
        raise RulesFileError([RuleProblem(message=f"invalid YAML: {message}", line=line)]) from exc
    except yaml.YAMLError as exc:
        raise RulesFileError([RuleProblem(message=f"invalid YAML: {exc}")]) from exc


def parse_rules(
    text: str,
    *,
    stored_channels: ChannelTypes | None = None,
    secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
) -> RulesFile:
    """Parse and validate a rules file.

    ``stored_channels`` are the channels ``notify`` may use besides the file's own
    (name -> type, or a callable asked only when a name is not in the file);
    ``secret_vars`` (``Settings.secret_vars``) the variables channel settings may
    reference. Raises RulesFileError listing every problem; returns the validated file
    otherwise. Unset variables are not problems: see :func:`channel_warnings`.
    """
    if len(text.encode("utf-8", errors="replace")) > MAX_FILE_BYTES:
        raise RulesFileError([RuleProblem(message=f"the file is larger than {MAX_FILE_BYTES} bytes")])
    data = _read_yaml(text)
    if data is None:
        raise RulesFileError([RuleProblem(message="the file is empty; write 'rules: []' for no rules")])
    if not isinstance(data, Mapping):
        raise RulesFileError(
            [
                RuleProblem(
                    message="a rules file is a mapping with 'rules' (and 'channels'), "
                    f"not {_type_name(data)}",
                    line=1,
                )
            ]
        )
    validator = _Validator(stored_channels if stored_channels is not None else {}, secret_vars)
    validator.unknown_keys(data, TOP_KEYS, "the file", None)
    channels = validator.channels(data.get("channels"), _line_of(data, "channels"))
    rules: list[Rule] = []
    if "rules" not in data:
        validator.add("the file needs 'rules:' (a list; 'rules: []' for none)", line=_line_of(data))
    else:
        rules = validator.rules(data["rules"], _line_of(data, "rules"), {c.name: c.type for c in channels})
    if validator.problems:
        raise RulesFileError(sorted(validator.problems, key=lambda p: p.line or 0))
    return RulesFile(rules=tuple(rules), channels=tuple(channels))


def rule_from_mapping(
    mapping: Mapping[str, Any], *, channels: Mapping[str, str], check_templates: bool = False
) -> Rule:
    """A rule from its stored mapping (:meth:`Rule.to_mapping`), validated like a file's.

    ``channels`` are the channels ``notify`` may use (name -> type). Templates are compiled only with
    ``check_templates`` (the engine compiles them anyway). Raises RulesFileError.
    """
    validator = _Validator(channels)
    rule = validator.rule(mapping, None, channels, check_templates=check_templates)
    if validator.problems or rule is None:
        raise RulesFileError(validator.problems or [RuleProblem(message="invalid rule")])
    return rule


def load_rules_file(
    path: str | Path,
    *,
    stored_channels: ChannelTypes | None = None,
    secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
) -> RulesFile:
    """Read and validate the rules file at ``path`` (see :func:`parse_rules`)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RulesFileError([RuleProblem(message=f"cannot read {path}: {exc.strerror}")]) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RulesFileError([RuleProblem(message=f"{path} is not UTF-8 text")]) from exc
    return parse_rules(text, stored_channels=stored_channels, secret_vars=secret_vars)


def channel_warnings(
    channels: Iterable[ChannelEntry],
    environment: Mapping[str, str],
    secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
) -> list[RuleProblem]:
    """One warning per channel and ``${VAR}`` it references that ``environment`` does not set.

    Not an error (the variable may be set where the service runs), but the channel's
    deliveries fail until it is.
    """
    warnings = []
    for channel in channels:
        for var in channel_missing_variables(
            channel.type, channel.settings, environment, secret_vars=secret_vars
        ):
            warnings.append(
                RuleProblem(
                    message=f"channel {channel.name!r}: environment variable {var} is not set "
                    "(its deliveries fail until it is)",
                    line=channel.line,
                )
            )
    return warnings


def dump_rules(rules_file: RulesFile, *, header: str | None = None) -> str:
    """The YAML text of ``rules_file``; :func:`parse_rules` reads it back to an equal file."""
    body = yaml.dump(
        rules_file.to_mapping(),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )
    if header:
        lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
        return lines + body
    return body


class _Dumper(yaml.SafeDumper):
    """Writes multi-line text as ``|`` blocks; never emits anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    if "'" in value and '"' not in value:
        # Expressions quote strings with '...': double quotes keep them readable.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    short = all(isinstance(v, str | int | float) and "\n" not in str(v) for v in value)
    flow = short and sum(len(str(v)) + 2 for v in value) <= 80
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)
