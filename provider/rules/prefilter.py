"""A pre-filter for ``when`` conditions: rules that cannot match a call, found without Jinja.

A rule whose condition starts with a *guard* -- the leftmost term of its ``and`` chain (or the
whole condition) comparing a pure, cheaply computed *operand* of the call with constants --
is decided false by the guard alone when the guard is false, because Jinja's ``and``
returns its false left side without evaluating the right one. Guards (``c``, ``d`` string
constants):

* ``operand == c``, ``operand in (c, d, ...)`` (a tuple or list of constants),
  ``c in operand`` (a substring of a text, or a name in ``groups``);
* ``operand is startingwith(c)``, ``operand is endingwith(c)``, ``operand is matching(c)``
  (when the pattern and text are such that the search runs without a timeout).

Operands: a context name (``loginUsername``, ``groups`` ...), ``cf.get(c, d)`` (also
``args`` and ``variables``), and either of these through any chain of the ``lower`` and
``upper`` filters. Each distinct operand is computed once per call, at the start of the
evaluation (the call's inputs do not change during it), with the same functions the sandbox
calls (Jinja's own filters, the rules' own tests); that work cannot raise and is bounded by
the inputs' size (case conversions, and searches that run in linear time by construction).

**Equivalence.** A guard only ever says "no match" when the full evaluation would say so
too, and the engine then does what that evaluation would have done besides answering:
each filter's result is counted against the call's budget, in order (so the value and
total limits trip exactly where they would, with the same error). The deadline checks the
sandbox makes inside the guard's filters and test (immediately after the engine's own
check before the rule, with nothing between them that can take time) are that one check. Whenever the operand is not exactly what the
guard expects (not a text, a mapping of another type), the guard stands aside and the
condition runs in Jinja as before. ``tests/unit/test_rules_prefilter.py`` checks, over
random rule sets, inputs and limits, that decisions and ``rules test`` traces are the
same with and without the pre-filter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError, nodes
from jinja2.parser import Parser
from jinja2.utils import _PassArg

from provider.rules.context import CONTEXT_NAMES, CaseInsensitiveDict, Names
from provider.rules.environment import TEXT_ENV
from provider.rules.limits import linear_search

#: Filters an operand may pass through: pure functions of a text, giving a text.
PURE_FILTERS = ("lower", "upper")
#: Mappings whose ``get`` an operand may call (a trusted read in the sandbox: no check, no charge).
GET_MAPPINGS = frozenset({"cf", "args", "variables"})
#: Tests a guard may use (the sandbox checks the deadline before each, charges nothing).
GUARD_TESTS = ("startingwith", "endingwith", "matching")

#: A hashable description of an operand: ("name", n) | ("get", mapping, key, default) |
#: ("filter", name, inner).
OperandKey = tuple[Any, ...]


def _raw_filter(name: str) -> Callable[[Any], Any] | None:
    """The unwrapped function the sandbox's ``name`` filter calls (``None`` if it takes Jinja's
    context or environment, which a guard cannot give it)."""
    wrapped = TEXT_ENV.filters.get(name)
    func = getattr(wrapped, "__wrapped__", None)
    if func is None or _PassArg.from_obj(func) is not None:
        return None
    return func  # type: ignore[no-any-return]


_FILTERS: dict[str, Callable[[Any], Any]] = {
    name: func for name in PURE_FILTERS if (func := _raw_filter(name)) is not None
}


@dataclass(frozen=True, slots=True)
class Operand:
    """A pure value of the call and how computing it in the sandbox is accounted for."""

    key: OperandKey

    def compute(self, variables: dict[str, Any]) -> tuple[Any, tuple[int, ...]] | None:
        """``(value, filter result lengths in evaluation order)``; ``None`` when the operand is
        not what a guard expects (the conditions then run in Jinja)."""
        kind = self.key[0]
        if kind == "name":
            return variables[self.key[1]], ()
        if kind == "get":
            mapping = variables[self.key[1]]
            if type(mapping) is not CaseInsensitiveDict:
                return None
            return mapping.get(self.key[2], self.key[3]), ()
        inner = Operand(self.key[2]).compute(variables)
        if inner is None:
            return None
        value, charges = inner
        if type(value) is not str:
            return None
        result = _FILTERS[self.key[1]](value)
        if type(result) is not str:
            return None
        return result, (*charges, len(result))


@dataclass(frozen=True, slots=True)
class Guard:
    """The leftmost term of a rule's condition, when it can be decided without Jinja.

    ``kind``: ``eq`` (operand == constant), ``one_of`` (operand in constants: a frozenset),
    ``contains`` (constant in operand), or a test: ``startingwith``, ``endingwith``,
    ``matching`` (a regular expression :func:`~provider.rules.limits.regex_search` would
    search without a timeout; else the guard stands aside).
    """

    operand: Operand
    kind: str
    constant: Any


#: What a rejected rule's guard would have charged in the sandbox: the operand's filter
#: result lengths, in order.
Accounting = tuple[int, ...]


class _Group:
    """The guards over one operand, by kind, each with its rule's index."""

    def __init__(self, operand: Operand) -> None:
        self.operand = operand
        self.equal: dict[str, list[int]] = {}  # constant -> rules that may match when equal
        self.by_equality: set[int] = set()
        self.tests: dict[str, list[tuple[str, int]]] = {}  # kind -> (constant, rule index)

    def add(self, index: int, guard: Guard) -> None:
        if guard.kind in ("eq", "one_of"):
            constants = (guard.constant,) if guard.kind == "eq" else guard.constant
            for constant in constants:
                self.equal.setdefault(constant, []).append(index)
            self.by_equality.add(index)
        else:
            self.tests.setdefault(guard.kind, []).append((guard.constant, index))

    def reject(self, value: Any, charges: tuple[int, ...], rejected: dict[int, Accounting]) -> None:
        """Add the rules this operand's ``value`` certainly rules out to ``rejected``."""
        contains = self.tests.get("contains")
        if contains and (type(value) is str or type(value) is Names):
            rejected.update((i, charges) for constant, i in contains if constant not in value)
        if type(value) is not str:
            return
        if self.by_equality:
            rejected.update(dict.fromkeys(self.by_equality.difference(self.equal.get(value, ())), charges))
        for kind, guards in self.tests.items():
            if kind == "startingwith":
                rejected.update((i, charges) for c, i in guards if not value.startswith(c))
            elif kind == "endingwith":
                rejected.update((i, charges) for c, i in guards if not value.endswith(c))
            elif kind == "matching":
                rejected.update((i, charges) for c, i in guards if linear_search(c, value) is False)


class Plan:
    """The guards of one operation's rules (indexed in evaluation order), decided together.

    Immutable once built; :meth:`rejected` keeps its per-call state in what it returns.
    """

    def __init__(self, guards: Iterable[Guard | None]) -> None:
        groups: dict[OperandKey, _Group] = {}
        for index, guard in enumerate(guards):
            if guard is not None:
                group = groups.get(guard.operand.key)
                if group is None:
                    group = groups[guard.operand.key] = _Group(guard.operand)
                group.add(index, guard)
        self._groups = tuple(groups.values())

    def __bool__(self) -> bool:
        return bool(self._groups)

    def rejected(self, variables: dict[str, Any]) -> dict[int, Accounting]:
        """The indexes of the rules whose condition is certainly false for this call, each with
        the lengths to charge to the call's budget when the rule's turn comes."""
        rejected: dict[int, Accounting] = {}
        for group in self._groups:
            computed = group.operand.compute(variables)
            if computed is not None:
                group.reject(computed[0], computed[1], rejected)
        return rejected


def _constant(node: nodes.Node) -> str | None:
    if type(node) is nodes.Const and type(node.value) is str:
        return node.value
    return None


def _operand(node: nodes.Node) -> Operand | None:
    """The operand ``node`` reads, if it is one a guard can compute."""
    if type(node) is nodes.Name and node.ctx == "load" and node.name in CONTEXT_NAMES:
        return Operand(("name", node.name))
    if type(node) is nodes.Filter and node.name in _FILTERS and node.node is not None:
        if node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
            return None
        inner = _operand(node.node)
        return Operand(("filter", node.name, inner.key)) if inner is not None else None
    if (
        type(node) is nodes.Call
        and type(node.node) is nodes.Getattr
        and node.node.attr == "get"
        and type(node.node.node) is nodes.Name
        and node.node.node.name in GET_MAPPINGS
        and len(node.args) == 2
        and not (node.kwargs or node.dyn_args or node.dyn_kwargs)
    ):
        key, default = _constant(node.args[0]), _constant(node.args[1])
        if key is not None and default is not None:
            return Operand(("get", node.node.node.name, key, default))
    return None


def _guard(node: nodes.Node) -> Guard | None:
    if type(node) is nodes.Test and node.name in GUARD_TESTS:
        if len(node.args) != 1 or node.kwargs or node.dyn_args or node.dyn_kwargs:
            return None
        operand, constant = _operand(node.node), _constant(node.args[0])
        if operand is None or constant is None:
            return None
        return Guard(operand, node.name, constant)
    if type(node) is not nodes.Compare or len(node.ops) != 1:
        return None
    op = node.ops[0]
    if op.op == "eq":
        for left, right in ((node.expr, op.expr), (op.expr, node.expr)):
            operand, constant = _operand(left), _constant(right)
            if operand is not None and constant is not None:
                return Guard(operand, "eq", constant)
        return None
    if op.op != "in":
        return None
    constant, operand = _constant(node.expr), _operand(op.expr)
    if constant is not None and operand is not None:
        return Guard(operand, "contains", constant)
    operand = _operand(node.expr)
    if operand is not None and isinstance(op.expr, nodes.Tuple | nodes.List):
        items = [_constant(item) for item in op.expr.items]
        if items and all(item is not None for item in items):
            return Guard(operand, "one_of", frozenset(items))
    return None


def guard_of(source: str) -> Guard | None:
    """The guard of the ``when`` expression ``source`` (already known to compile), if any."""
    try:
        parser = Parser(TEXT_ENV, source, state="variable")
        expr = parser.parse_expression()
    except TemplateError:
        return None
    while type(expr) is nodes.And:
        expr = expr.left
    return _guard(expr)


__all__ = ["Accounting", "Guard", "Operand", "Plan", "guard_of"]
