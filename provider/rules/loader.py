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

The YAML (with the line of every node) is read and written by
:mod:`provider.rules.yaml_lines`; the checks of a rule's actions are in
:mod:`provider.rules.action_checks`, the rules and channels here.

The format is documented in ``rules/README.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from provider.channels.registry import channel_missing_variables, validate_channel_settings
from provider.channels.validation import DEFAULT_SECRET_VARS, plain_settings
from provider.comms.checks import TemplateChecks
from provider.comms.templates import MessageTemplate
from provider.domain import ALL_METHODS, Method, Operation, method_named
from provider.errors import RuleProblem, RulesFileError
from provider.rules.action_checks import (
    YAML_BOOLEAN_HINT,
    ChannelTypes,
    describe_type,
    did_you_mean,
)
from provider.rules.engine import RuleCompileError, compile_rule
from provider.rules.model import (
    ACTION_METHODS,
    ANY_METHOD,
    DENY,
    ON_ERROR_VALUES,
    Actions,
    ChannelEntry,
    Rule,
    RulesFile,
)
from provider.rules.yaml_lines import dump_yaml, duplicate_keys, line_at, line_of, read_yaml

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_NAME_LENGTH = 200  # rules.name
MAX_CHANNEL_NAME_LENGTH = 100  # channels.name
NAME_PATTERN = re.compile(r"^[\w][\w .:@/+-]*$")
PRIORITY_LIMIT = 1_000_000_000

TOP_KEYS = ("variables", "channels", "templates", "rules")
RULE_KEYS = ("name", "description", "method", "priority", "enabled", "when", "on_error", "then")
CHANNEL_RESERVED = ("type", "enabled")
METHOD_NAMES = tuple(op.value for op in ALL_METHODS)


def _can_deny(actions: Actions) -> bool:
    return False in (actions.allow, actions.allow_tickets, actions.allow_chats)


class _Validator(TemplateChecks):
    """Walks one parsed file, building the model and collecting every problem."""

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
            self.add(
                f"{what} must be a non-empty text, not {describe_type(value)}{hint}", line=line, rule=rule
            )
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
            self.add(f"channels must be a mapping of channel names, not {describe_type(node)}", line=line)
            return []
        for key, dup_line in duplicate_keys(node):
            self.add(f"channel {key!r} is defined more than once", line=dup_line)
        specs = []
        for name, body in node.items():
            spec = self.channel(name, body, line_of(node, name))
            if spec is not None:
                specs.append(spec)
        return specs

    def channel(self, name: Any, body: Any, line: int | None) -> ChannelEntry | None:
        checked = self.name(name, "a channel name", line, limit=MAX_CHANNEL_NAME_LENGTH)
        if checked is None:
            return None
        what = f"channel {checked!r}"
        if not isinstance(body, Mapping):
            self.add(f"{what} must be a mapping with at least 'type', not {describe_type(body)}", line=line)
            return None
        for key, dup_line in duplicate_keys(body):
            self.add(f"{what}: {key!r} is given more than once", line=dup_line)
        type_name = body.get("type")
        if not isinstance(type_name, str) or not type_name.strip():
            self.add(f"{what} needs a 'type' (text)", line=line_of(body, "type"))
            return None
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            self.add(f"{what}: enabled must be true or false", line=line_of(body, "enabled"))
            enabled = True
        settings, shape_problems = plain_settings(
            {k: v for k, v in body.items() if k not in CHANNEL_RESERVED}
        )
        for key, problem in shape_problems:
            self.add(f"{what}: {problem}", line=line_of(body, key))
        if not shape_problems:
            for problem in validate_channel_settings(type_name, settings, secret_vars=self._secret_vars):
                self.add(f"{what}: {problem}", line=line)
        return ChannelEntry(name=checked, type=type_name, settings=settings, enabled=enabled, line=line)

    # --- rules

    def rules(self, node: Any, line: int | None, channel_names: Mapping[str, str]) -> list[Rule]:
        if not isinstance(node, list):
            self.add(f"rules must be a list of rules, not {describe_type(node)}", line=line)
            return []
        rules: list[Rule] = []
        seen: dict[str, int | None] = {}
        for i, body in enumerate(node):
            rule_line = line_of(node, i)
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
            self.add(f"a rule must be a mapping, not {describe_type(body)}", line=line)
            return None
        start = len(self.problems)
        raw_name = body.get("name")
        name = self.name(raw_name, "the rule name", line_of(body, "name"))
        label = name if name is not None else (raw_name if isinstance(raw_name, str) else None)
        self.unknown_keys(body, RULE_KEYS, "rule", label)

        description = self.rule_description(body, label)
        priority = self.rule_priority(body, label)
        enabled = self.rule_enabled(body, label)
        when = self.rule_when(body, label)
        on_error = self.rule_on_error(body, label)

        method, methods = self.method(body, label)
        then = body.get("then")
        actions = self.then(then, line_of(body, "then"), label, channel_names) if "then" in body else None
        if "then" not in body:
            self.add("a rule needs 'then' (what to do when it matches)", line=line, rule=label)
        if on_error == DENY and actions is not None and not _can_deny(actions):
            self.add(
                "on_error: deny needs a rule that denies (allow, allow_tickets or allow_chats: false)",
                line=line_of(body, "on_error"),
                rule=label,
            )
        if actions is not None and method is not None:
            methods = self.check_actions(actions, method, methods, line_of(body, "method"), label)
        if actions is not None and check_templates:
            self.check_compiles(body, actions, when, line, label)
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

    def rule_description(self, body: Mapping[Any, Any], rule: str | None) -> str | None:
        """The rule's ``description`` (text; ``None`` when left out or not text)."""
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            self.add("description must be text", line=line_of(body, "description"), rule=rule)
            description = None
        return description

    def rule_priority(self, body: Mapping[Any, Any], rule: str | None) -> int:
        """The rule's ``priority`` (a whole number within PRIORITY_LIMIT; 0 when left out or not one)."""
        priority = body.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            self.add(
                f"priority must be a whole number, not {describe_type(priority)}",
                line=line_of(body, "priority"),
                rule=rule,
            )
            priority = 0
        elif abs(priority) > PRIORITY_LIMIT:
            self.add(
                f"priority must be between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT}",
                line=line_of(body, "priority"),
                rule=rule,
            )
        return priority

    def rule_enabled(self, body: Mapping[Any, Any], rule: str | None) -> bool:
        """The rule's ``enabled`` (true when left out or not a boolean)."""
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            self.add("enabled must be true or false", line=line_of(body, "enabled"), rule=rule)
            enabled = True
        return enabled

    def rule_when(self, body: Mapping[Any, Any], rule: str | None) -> str | None:
        """The rule's ``when`` expression (``None``: always matches, or not valid text)."""
        when = body.get("when")
        if "when" in body and (not isinstance(when, str) or not when.strip()):
            hint = " (leave 'when' out to always match)" if isinstance(when, bool) else ""
            self.add(
                f"when must be an expression in text, not {describe_type(when)}{hint}",
                line=line_of(body, "when"),
                rule=rule,
            )
            when = None
        return when

    def rule_on_error(self, body: Mapping[Any, Any], rule: str | None) -> str | None:
        """The rule's ``on_error`` (one of ON_ERROR_VALUES; ``None`` when left out or not one)."""
        on_error = body.get("on_error")
        if "on_error" in body and on_error not in ON_ERROR_VALUES:
            self.add(
                f"on_error must be one of {', '.join(ON_ERROR_VALUES)}, not {on_error!r}",
                line=line_of(body, "on_error"),
                rule=rule,
            )
            on_error = None
        return on_error

    def check_compiles(
        self, body: Mapping[Any, Any], actions: Actions, when: str | None, line: int | None, rule: str | None
    ) -> None:
        """A problem for each expression and template of the rule that does not compile.

        What is there is compiled even when other parts are wrong: every problem is reported at once.
        """
        provisional = Rule(
            name=rule or "?", method=ANY_METHOD, methods=frozenset(), then=actions, when=when, line=line
        )
        try:
            compile_rule(provisional)
        except RuleCompileError as exc:
            for path, message in exc.problems:
                raw = self.raw_path(path)
                self.add(
                    f"{'.'.join(str(p) for p in raw)}: {message}",
                    line=line_at(body, raw),
                    rule=rule,
                )

    def method(
        self, body: Mapping[Any, Any], rule: str | None
    ) -> tuple[str | tuple[str, ...] | None, set[Method]]:
        line = line_of(body, "method")
        if "method" not in body:
            self.add(
                f"a rule needs 'method' (one of {', '.join(METHOD_NAMES)}, a list, or '*')",
                line=line_of(body),
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
            return ANY_METHOD, set(Operation)  # the SOAP operations; rules-only methods are named
        methods: set[Method] = set()
        ok = True
        for n in names:
            if n in METHOD_NAMES:
                if method_named(n) in methods:
                    self.add(f"method {n!r} is listed twice", line=line, rule=rule)
                    ok = False
                methods.add(method_named(n))
            else:
                self.add(
                    f"unknown method {n!r}{did_you_mean(n, METHOD_NAMES)} (known: {', '.join(METHOD_NAMES)}, '*')",
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
        methods: set[Method],
        line: int | None,
        rule: str | None,
    ) -> set[Method]:
        names = actions.names()
        if method == ANY_METHOD:
            # '*' narrows to the operations that support every action of the rule.
            narrowed: set[Method] = set(Operation)
            for action in names:
                narrowed &= ACTION_METHODS[action]
            if not narrowed:
                self.add(
                    f"no method supports all of: {', '.join(names)}; split the rule", line=line, rule=rule
                )
            return narrowed
        for action in names:
            for op in sorted(methods - ACTION_METHODS[action], key=lambda o: METHOD_NAMES.index(o.value)):
                allowed = ", ".join(o.value for o in ALL_METHODS if o in ACTION_METHODS[action])
                self.add(f"{action!r} is not valid for {op.value} (only for {allowed})", line=line, rule=rule)
        return methods


def parse_rules(
    text: str,
    *,
    stored_channels: ChannelTypes | None = None,
    secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
    stored_templates: Iterable[MessageTemplate] = (),
    read_only_vars: Mapping[str, str] | None = None,
) -> RulesFile:
    """Parse and validate a rules file.

    ``stored_channels`` are the channels ``notify`` may use besides the file's own
    (name -> type, or a callable asked only when a name is not in the file);
    ``stored_templates`` the templates it may name besides the file's own;
    ``secret_vars`` (``Settings.secret_vars``) the variables channel settings may
    reference; ``read_only_vars`` (``Settings.read_only_vars``) the names ``variables:``
    may not use. Raises RulesFileError listing every problem; returns the validated file
    otherwise. Unset variables are not problems: see :func:`channel_warnings`.
    """
    if len(text.encode("utf-8", errors="replace")) > MAX_FILE_BYTES:
        raise RulesFileError([RuleProblem(message=f"the file is larger than {MAX_FILE_BYTES} bytes")])
    data = read_yaml(text)
    if data is None:
        raise RulesFileError([RuleProblem(message="the file is empty; write 'rules: []' for no rules")])
    if not isinstance(data, Mapping):
        raise RulesFileError(
            [
                RuleProblem(
                    message="a rules file is a mapping with 'rules' (and 'channels'), "
                    f"not {describe_type(data)}",
                    line=1,
                )
            ]
        )
    validator = _Validator(stored_channels if stored_channels is not None else {}, secret_vars)
    validator.unknown_keys(data, TOP_KEYS, "the file", None)
    variables = validator.variables(data.get("variables"), line_of(data, "variables"), read_only_vars or {})
    channels = validator.channels(data.get("channels"), line_of(data, "channels"))
    validator.templates_by_name.update((t.name, t) for t in stored_templates)
    templates = validator.templates(data.get("templates"), line_of(data, "templates"))
    rules: list[Rule] = []
    if "rules" not in data:
        validator.add("the file needs 'rules:' (a list; 'rules: []' for none)", line=line_of(data))
    else:
        rules = validator.rules(data["rules"], line_of(data, "rules"), {c.name: c.type for c in channels})
    if validator.problems:
        raise RulesFileError(sorted(validator.problems, key=lambda p: p.line or 0))
    return RulesFile(
        rules=tuple(rules), channels=tuple(channels), templates=tuple(templates), variables=variables
    )


def rule_from_mapping(
    mapping: Mapping[str, Any],
    *,
    channels: Mapping[str, str],
    check_templates: bool = False,
    templates: Iterable[MessageTemplate] = (),
) -> Rule:
    """A rule from its stored mapping (:meth:`Rule.to_mapping`), validated like a file's.

    ``channels`` are the channels ``notify`` may use (name -> type), ``templates`` the message
    templates it may name. Templates are compiled only with ``check_templates`` (the engine
    compiles them anyway). Raises RulesFileError.
    """
    validator = _Validator(channels)
    validator.templates_by_name.update((t.name, t) for t in templates)
    rule = validator.rule(mapping, None, channels, check_templates=check_templates)
    if validator.problems or rule is None:
        raise RulesFileError(validator.problems or [RuleProblem(message="invalid rule")])
    return rule


def load_rules_file(
    path: str | Path,
    *,
    stored_channels: ChannelTypes | None = None,
    secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
    stored_templates: Iterable[MessageTemplate] = (),
    read_only_vars: Mapping[str, str] | None = None,
) -> RulesFile:
    """Read and validate the rules file at ``path`` (see :func:`parse_rules`)."""
    return parse_rules(
        read_rules_text(path),
        stored_channels=stored_channels,
        secret_vars=secret_vars,
        stored_templates=stored_templates,
        read_only_vars=read_only_vars,
    )


def read_rules_text(path: str | Path) -> str:
    """The text of the rules file at ``path`` (UTF-8, a BOM dropped); RulesFileError when unreadable."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RulesFileError([RuleProblem(message=f"cannot read {path}: {exc.strerror}")]) from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RulesFileError([RuleProblem(message=f"{path} is not UTF-8 text")]) from exc


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
    return dump_yaml(rules_file.to_mapping(), header=header)
