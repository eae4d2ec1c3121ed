"""Compiling rules and evaluating them for one call.

(Over 500 lines because compiling and evaluating share the compiled form and the fast paths
of conditions; the sandbox is in :mod:`provider.rules.environment`, its limits in
:mod:`provider.rules.limits` and :mod:`provider.rules.checked`.)

:func:`compile_rule` turns a :class:`~provider.rules.model.Rule` into a
:class:`CompiledRule` (every expression and template compiled once);
:class:`RuleSet` holds the compiled rules of one rule-set version and answers
:meth:`RuleSet.evaluate` with a :class:`~provider.domain.Decision`.

Evaluation, for the enabled rules of the operation in ascending priority (equal
priorities keep file order):

1. ``when`` (absent = always) is evaluated; false -> next rule.
2. Every template of ``then`` is rendered *before* anything is applied, so a rule
   either applies whole or not at all -- except that a matched rule's denials
   (``allow``/``allow_tickets``/``allow_chats: false``) stand even when its templates
   fail (fail closed; the default denial message is used).
3. ``allow: false`` denies the call and ends evaluation (a deny is final; its
   ``message``, or none, becomes the result message). ``allow_tickets``/``allow_chats:
   false`` deny one of the two. ``message``, ``set`` (per variable), ``fields`` (per
   field name) and ``html`` replace what earlier rules wrote; ``notify`` entries add up.
4. ``stop: true`` ends evaluation after this rule.

A rule whose expression or template raises at run time -- including hitting a
sandbox limit (:mod:`provider.rules.limits`: the call's deadline, output or value
sizes, integers, a regular expression's timeout) -- is logged (event ``rules.error``
with the rule name, the stage, the error type, the limit, never values) and counted
in ``st_provider_rule_errors_total``. A rule that can deny fails closed: its denials
apply with the default denial message, and a deny ends evaluation, as if it had
matched. Unless it says ``on_error: skip``; then, like every other rule, it is
skipped and the call goes on. Pass a ``trace`` list to :meth:`RuleSet.evaluate` to
learn what happened to every rule (``rules test``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from time import monotonic
from typing import Any

from provider.domain import ALL_METHODS, CustomFieldData, Decision, Identity, Method, Notification
from provider.errors import RuleError, RuleLimitExceeded
from provider.metrics import RULE_ERRORS
from provider.rules.context import CONTEXT_NAMES, CaseInsensitiveDict, build_context
from provider.rules.environment import (
    CompileError,
    Condition,
    Scope,
    TextTemplate,
    compile_condition,
    compile_text,
)
from provider.rules.limits import DEFAULT_LIMITS, RuleLimits, text_size
from provider.rules.model import SKIP, FieldSpec, NotifySpec, Rule
from provider.rules.prefilter import Guard, Plan, guard_of
from provider.variables import InputVariables

log = logging.getLogger("provider.rules")

Path = tuple[str | int, ...]

# Outcomes in a trace.
MATCHED = "matched"
NO_MATCH = "no match"
ERROR = "error"
NOT_REACHED = "not reached"
DISABLED = "disabled"


class RuleCompileError(RuleError):
    """A rule's expressions or templates do not compile.

    ``problems`` pairs the path of the offending value inside the rule (such as
    ``("then", "set", "departmentName")``) with what is wrong with it.
    """

    def __init__(self, rule: str, problems: Sequence[tuple[Path, str]]) -> None:
        self.rule = rule
        self.problems = tuple(problems)
        text = "; ".join(f"{'.'.join(str(p) for p in path)}: {msg}" for path, msg in self.problems)
        super().__init__(f"rule {rule!r}: {text}")


@dataclass(frozen=True)
class TraceEntry:
    """What happened to one rule during an evaluation (for ``rules test``)."""

    rule: str
    priority: int
    outcome: str
    detail: str | None = None


@dataclass(slots=True)
class Effects:
    """A matched rule's rendered actions, applied only once all of them rendered."""

    deny: bool = False
    deny_tickets: bool = False
    deny_chats: bool = False
    message: str | None = None
    variables: list[tuple[str, str]] = field(default_factory=list)
    fields: list[CustomFieldData] = field(default_factory=list)
    html: str | None = None
    notifications: list[Notification] = field(default_factory=list)


@dataclass(frozen=True)
class CompiledField:
    spec: FieldSpec
    options: tuple[TextTemplate, ...] | None
    options_from: Condition | None

    def render(self, scope: Scope) -> CustomFieldData:
        options: list[str] | None = None
        if self.options is not None:
            options = [t.render(scope) for t in self.options]
        elif self.options_from is not None:
            value = self.options_from(scope)
            if text_size(value, scope.budget.limits.max_output) > scope.budget.limits.max_output:
                raise RuleLimitExceeded("output", "list_from gave more text than a rendered template may")
            options = _as_options(value)
        spec = self.spec
        return CustomFieldData(
            name=spec.name,
            display_with_information_lookup=spec.lookup,
            change_list_options=options is not None,
            list_options=tuple(o for o in options or () if o != ""),
            change_required=spec.required is not None,
            new_required_value=bool(spec.required),
            change_visible=spec.visible is not None,
            new_visible_value=bool(spec.visible),
        )


def _as_options(value: Any) -> list[str]:
    """The result of ``list_from`` as drop-down options."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        raise TypeError("list_from gave a mapping, not a list")
    return [str(item) for item in value if item is not None]


class _Params:
    """A ``notify`` entry's parameters, with every string leaf a compiled template."""

    def __init__(self, tree: Any) -> None:
        self.tree = tree

    def render(self, scope: Scope) -> Any:
        return _render_tree(self.tree, scope)


def _render_tree(node: Any, scope: Scope) -> Any:
    if isinstance(node, TextTemplate):
        return node.render(scope)
    if isinstance(node, dict):
        return {key: _render_tree(value, scope) for key, value in node.items()}
    if isinstance(node, list):
        return [_render_tree(value, scope) for value in node]
    return node


class CompiledRule:
    """One rule, ready to evaluate. ``position`` breaks priority ties (file order)."""

    def __init__(
        self,
        rule: Rule,
        *,
        position: int,
        when: Condition | None,
        message: TextTemplate | None,
        set_values: tuple[tuple[str, TextTemplate], ...],
        fields: tuple[CompiledField, ...],
        html: TextTemplate | None,
        notify: tuple[tuple[str, str | None, _Params], ...],
    ) -> None:
        self.rule = rule
        self.name = rule.name
        self.position = position
        self.priority = rule.priority
        self.enabled = rule.enabled
        self.when = when
        #: The condition as a function of the scope's condition context (``None``: always).
        self.test = when.function if when is not None else None
        #: The condition's leading term, when it can rule the call out without Jinja.
        self.guard: Guard | None = guard_of(when.source) if when is not None else None
        self.message = message
        self.set_values = set_values
        self.fields = fields
        self.html = html
        self.notify = notify
        self.deny = rule.then.allow is False
        self.final = self.deny or rule.then.stop
        then = rule.then
        self._deny_tickets = then.allow_tickets is False
        self._deny_chats = then.allow_chats is False
        self.denies = self.deny or self._deny_tickets or self._deny_chats
        #: Whether an error in this rule applies its denials (fail closed) instead of skipping it.
        self.fails_closed = self.denies and rule.on_error != SKIP

    def matches(self, scope: Scope) -> bool:
        return self.when is None or bool(self.when(scope))

    def bare_denial(self) -> Effects:
        """This rule's denials alone (when rendering the rest of it failed)."""
        return Effects(deny=self.deny, deny_tickets=self._deny_tickets, deny_chats=self._deny_chats)

    def effects(self, scope: Scope) -> Effects:
        """The rule's rendered actions (only the templates it has are visited)."""
        message, html = self.message, self.html
        return Effects(
            deny=self.deny,
            deny_tickets=self._deny_tickets,
            deny_chats=self._deny_chats,
            message=message.render(scope) if message is not None else None,
            variables=[(name, value.render(scope)) for name, value in self.set_values]
            if self.set_values
            else [],
            fields=[f.render(scope) for f in self.fields] if self.fields else [],
            html=html.render(scope) if html is not None else None,
            notifications=[
                Notification(rule=self.name, channel=channel, params=params.render(scope), template=template)
                for channel, template, params in self.notify
            ]
            if self.notify
            else [],
        )


class _Compiler:
    """Compiles one rule, collecting every problem with its path."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.problems: list[tuple[Path, str]] = []

    def condition(self, path: Path, source: str) -> Condition | None:
        try:
            return compile_condition(source, CONTEXT_NAMES)
        except CompileError as exc:
            self.problems.extend((path, p) for p in exc.problems)
            return None

    def text(self, path: Path, source: str, *, html: bool = False) -> TextTemplate:
        try:
            return compile_text(source, CONTEXT_NAMES, html=html)
        except CompileError as exc:
            self.problems.extend((path, p) for p in exc.problems)
            return TextTemplate(source, None)

    def tree(self, path: Path, node: Any, *, html: bool = False) -> Any:
        if isinstance(node, str):
            return self.text(path, node, html=html)
        if isinstance(node, Mapping):
            return {key: self.tree((*path, key), value, html=html) for key, value in node.items()}
        if isinstance(node, list | tuple):
            return [self.tree((*path, i), value, html=html) for i, value in enumerate(node)]
        return node

    def params(self, path: Path, entry: NotifySpec) -> _Params:
        """A notify entry's parameters (a template's merged in), ``html_params`` autoescaped."""
        return _Params(
            {
                key: self.tree((*path, key), value, html=key in entry.html_params)
                for key, value in entry.effective_params.items()
            }
        )

    def compile(self, position: int) -> CompiledRule:
        rule, then = self.rule, self.rule.then
        when = self.condition(("when",), rule.when) if rule.when is not None else None
        message = self.text(("then", "message"), then.message) if then.message is not None else None
        set_values = tuple((name, self.text(("then", "set", name), value)) for name, value in then.set)
        fields = []
        for i, spec in enumerate(then.fields):
            options = None
            if spec.options is not None:
                options = tuple(
                    self.text(("then", "fields", i, "list", j), option)
                    for j, option in enumerate(spec.options)
                )
            options_from = None
            if spec.options_from is not None:
                options_from = self.condition(("then", "fields", i, "list_from"), spec.options_from)
            fields.append(CompiledField(spec, options, options_from))
        html = self.text(("then", "html"), then.html, html=True) if then.html is not None else None
        notify = tuple(
            (entry.channel, entry.template, self.params(("then", "notify", i), entry))
            for i, entry in enumerate(then.notify)
        )
        if self.problems:
            raise RuleCompileError(rule.name, self.problems)
        return CompiledRule(
            rule,
            position=position,
            when=when,
            message=message,
            set_values=set_values,
            fields=tuple(fields),
            html=html,
            notify=notify,
        )


def compile_rule(rule: Rule, position: int = 0) -> CompiledRule:
    """Compile every expression and template of ``rule``.

    Raises :class:`RuleCompileError` listing every problem (the loader turns them
    into line-numbered :class:`~provider.errors.RuleProblem` entries).
    """
    return _Compiler(rule).compile(position)


class _Accumulator:
    """Applies matched rules' effects to a Decision, with name indexes for replacing in place."""

    __slots__ = ("_fields", "_variables", "decision")

    def __init__(self) -> None:
        self.decision = Decision()
        self._variables: dict[str, int] = {}
        self._fields: dict[str, int] = {}

    def apply(self, effects: Effects, rule: str) -> None:
        decision = self.decision
        decision.matched.append(rule)
        if effects.deny:
            decision.allow = False
            decision.message = effects.message
        elif effects.message is not None:
            decision.message = effects.message
        if effects.deny_tickets:
            decision.allow_tickets = False
        if effects.deny_chats:
            decision.allow_chats = False
        for name, value in effects.variables:
            # Replace in place keeping the first spelling, as OutputVariables.set does.
            index = self._variables.get(name.lower())
            if index is None:
                self._variables[name.lower()] = len(decision.variables)
                decision.variables.append((name, value))
            else:
                decision.variables[index] = (decision.variables[index][0], value)
        if effects.fields:
            self._apply_fields(effects.fields)
        if effects.html is not None:
            decision.html = effects.html
        if effects.notifications:
            decision.notifications.extend(effects.notifications)

    def _apply_fields(self, fields: list[CustomFieldData]) -> None:
        decision = self.decision
        for data in fields:
            index = self._fields.get(data.name.lower())
            if index is None:
                self._fields[data.name.lower()] = len(decision.fields)
                decision.fields.append(data)
            else:
                decision.fields[index] = replace(data, name=decision.fields[index].name)


def _rule_error(rule: CompiledRule, operation: Method, stage: str, exc: Exception) -> None:
    """Log and count a rule's run-time error (``outcome``: ``denied`` or ``skipped``)."""
    RULE_ERRORS.labels(rule=rule.name).inc()
    log.warning(
        "rule failed closed: it raised, its denial applies"
        if rule.fails_closed
        else "rule skipped: it raised",
        extra={
            "event": "rules.error",
            "rule": rule.name,
            "error": type(exc).__name__,
            "limit": exc.limit if isinstance(exc, RuleLimitExceeded) else None,
            "stage": stage,
            "operation": operation.value,
            "outcome": "denied" if rule.fails_closed else "skipped",
        },
    )


def _failed(
    rule: CompiledRule,
    operation: Method,
    stage: str,
    exc: Exception,
    *,
    result: _Accumulator,
    trace: list[TraceEntry] | None,
) -> bool:
    """Handle a rule's run-time error (noted in the decision's ``rule_errors``); True when it
    failed closed (its denial applied)."""
    _rule_error(rule, operation, stage, exc)
    result.decision.rule_errors.append((rule.name, type(exc).__name__))
    failure = f"{stage}: {type(exc).__name__}: {exc}"
    if not rule.fails_closed:
        if trace is not None:
            trace.append(TraceEntry(rule.name, rule.rule.priority, ERROR, failure))
        return False
    # Fail closed: the rule's denials stand (its condition matched or could not be
    # decided); the rest of it is dropped, the default denial message is used.
    if trace is not None:
        note = f"{failure}; failed closed: only its denial was applied, without its message"
        trace.append(TraceEntry(rule.name, rule.rule.priority, ERROR, note))
    result.apply(rule.bare_denial(), rule.name)
    return True


class RuleSet:
    """The compiled rules of one rule-set version, indexed by operation.

    Immutable once built; safe to share between threads.
    """

    def __init__(
        self,
        rules: Iterable[CompiledRule] = (),
        *,
        version: int = 0,
        variables: Mapping[str, str] | None = None,
        prefilter: bool = True,
    ) -> None:
        ordered = sorted(rules, key=lambda r: (r.rule.priority, r.position))
        self.version = version
        #: Whether conditions' guards (:mod:`provider.rules.prefilter`) skip rules that cannot
        #: match; off, every condition runs in Jinja (the same decisions and traces, slower).
        self.prefilter = prefilter
        #: ``vars`` of every condition and template (global variables, names ignore case).
        self.variables = CaseInsensitiveDict((variables or {}).items())
        self.rules: tuple[CompiledRule, ...] = tuple(ordered)
        self._all: dict[Method, tuple[CompiledRule, ...]] = {}
        self._enabled: dict[Method, tuple[CompiledRule, ...]] = {}
        self._plans: dict[tuple[Method, bool], Plan] = {}
        for operation in ALL_METHODS:
            applicable = tuple(r for r in ordered if operation in r.rule.methods)
            self._all[operation] = applicable
            self._enabled[operation] = tuple(r for r in applicable if r.rule.enabled)
            for disabled, chosen in ((True, applicable), (False, self._enabled[operation])):
                self._plans[operation, disabled] = Plan(r.guard if r.enabled else None for r in chosen)

    def __len__(self) -> int:
        return len(self.rules)

    def for_method(self, operation: Method, *, include_disabled: bool = False) -> tuple[CompiledRule, ...]:
        """The rules of ``operation`` in evaluation order."""
        return (self._all if include_disabled else self._enabled)[operation]

    def evaluate(
        self,
        operation: Method,
        variables: InputVariables,
        identity: Identity | None,
        trace: list[TraceEntry] | None = None,
        limits: RuleLimits = DEFAULT_LIMITS,
    ) -> Decision:
        """The decision for one call (see the module docstring). Never raises for a rule.

        ``limits`` bound the whole evaluation (its deadline starts here).
        """
        rules = self.for_method(operation, include_disabled=trace is not None)
        if not rules:
            return Decision()
        scope = Scope(build_context(operation, variables, identity, self.variables), limits)
        token = scope.enter()
        try:
            plan = self._plans[operation, trace is not None] if self.prefilter else None
            return self._evaluate(rules, scope, operation, trace, plan)
        finally:
            scope.leave(token)

    @staticmethod
    def _evaluate(
        rules: Sequence[CompiledRule],
        scope: Scope,
        operation: Method,
        trace: list[TraceEntry] | None,
        plan: Plan | None,
    ) -> Decision:
        """The rules in order, with ``scope``'s budget active (what :meth:`CompiledRule.matches`
        does per rule is inlined: the deadline, then the condition in the shared context)."""
        result = _Accumulator()
        stopped_by: str | None = None
        budget = scope.budget
        deadline = budget.deadline
        context = scope.condition_context()
        # The rules certainly ruled out by their guards (computed once per call, not per rule).
        rejected = plan.rejected(scope.variables) if plan else {}
        for index, rule in enumerate(rules):
            if stopped_by is not None:
                if trace is not None:
                    trace.append(
                        TraceEntry(
                            rule.name, rule.priority, NOT_REACHED, f"evaluation stopped by {stopped_by!r}"
                        )
                    )
                continue
            if not rule.enabled:
                if trace is not None:
                    trace.append(TraceEntry(rule.name, rule.priority, DISABLED))
                continue
            test = rule.test
            if test is not None:
                try:
                    if monotonic() > deadline:
                        budget.check_time()
                    charges = rejected.get(index)
                    if charges is None:
                        matched = bool(test(context))
                    else:  # certainly false: only what its filters' results cost the budget
                        matched = False
                        for length in charges:
                            budget.charge(length)
                except Exception as exc:  # noqa: BLE001 - any error in an admin's expression is the rule's
                    if _failed(rule, operation, "when", exc, result=result, trace=trace) and rule.final:
                        stopped_by = rule.name
                    continue
                if not matched:
                    if trace is not None:
                        trace.append(
                            TraceEntry(rule.name, rule.priority, NO_MATCH, f"when is false: {rule.rule.when}")
                        )
                    continue
            try:
                effects = rule.effects(scope)
            except Exception as exc:  # noqa: BLE001 - any error in an admin's template is the rule's
                if not _failed(rule, operation, "then", exc, result=result, trace=trace):
                    continue
            else:
                result.apply(effects, rule.name)
                if trace is not None:
                    actions = ", ".join(rule.rule.then.names()) or None
                    trace.append(TraceEntry(rule.name, rule.priority, MATCHED, actions))
            if rule.final:
                stopped_by = rule.name
        return result.decision


def compile_rules(
    rules: Iterable[Rule], *, version: int = 0, variables: Mapping[str, str] | None = None
) -> RuleSet:
    """Compile ``rules`` (in file order) into a :class:`RuleSet` with the global ``variables``;
    raises RuleCompileError."""
    return RuleSet(
        (compile_rule(rule, i) for i, rule in enumerate(rules)), version=version, variables=variables
    )
