"""Warnings about lookups that raise when SmarterTrack does not send a value.

``cf['X']``, ``cf.X``, ``args['x']``/``args.x``, ``user[...]`` and ``variables[...]``
raise at run time (the sandbox's undefined values are strict) whenever the value is
absent, and the rule is then skipped (or, for a deny, fails closed). A lookup is
*guarded*, and not reported, when it is

* read through a method: ``cf.get('X')``;
* tested: ``cf.X is defined`` / ``is undefined``, or given a fallback: ``cf.X | default('')``;
* after a test that it is there, in the same expression or an ``if``: ``'X' in cf and
  cf['X'] == '0'``, ``cf.X is defined and ...``, ``... if 'X' in cf else ...``,
  ``{% if cf.X is defined %}{{ cf.X }}{% endif %}`` (and the ``or``/``else`` side of a
  ``not in``/``is undefined`` test).

The check works on the parsed Jinja2 tree (:mod:`jinja2.nodes`) of every ``when``,
``list_from`` and template of a validated rule. It never refuses a file: the loader has
already accepted it; the warnings name the rule, its line and the place in the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateError
from jinja2.parser import Parser

from provider.errors import RuleProblem
from provider.rules.model import Rule

#: names whose items SmarterTrack may or may not send
LOOKUP_NAMES = frozenset({"cf", "args", "user", "variables"})
#: methods of those mappings: calling them is not a lookup
SAFE_METHODS = frozenset({"get", "items", "keys", "values"})
DEFAULT_FILTERS = frozenset({"default", "d"})

_ENV = Environment(autoescape=False)  # noqa: S701 - only parses, never renders

Guard = frozenset[tuple[str, str]]
_NONE: Guard = frozenset()


def unguarded_lookups(rules: Iterable[Rule]) -> list[RuleProblem]:
    """One warning per unguarded lookup in ``rules`` (see the module docstring)."""
    warnings: list[RuleProblem] = []
    for rule in rules:
        for place, source, is_expression in _sources(rule):
            for text in _unguarded(source, is_expression=is_expression):
                warnings.append(
                    RuleProblem(
                        message=f"{place}: {text} is read without a guard; it raises when SmarterTrack "
                        f"does not send it (use .get(...), 'is defined', 'in' or '| default(...)')",
                        rule=rule.name,
                        line=rule.line,
                    )
                )
    return warnings


def _sources(rule: Rule) -> Iterator[tuple[str, str, bool]]:
    """(place, source, is an expression) for every expression and template of ``rule``."""
    then = rule.then
    if rule.when is not None:
        yield "when", rule.when, True
    if then.message is not None:
        yield "then.message", then.message, False
    for name, value in then.set:
        yield f"then.set.{name}", value, False
    for spec in then.fields:
        for option in spec.options or ():
            yield f"then.fields.{spec.name}.list", option, False
        if spec.options_from is not None:
            yield f"then.fields.{spec.name}.list_from", spec.options_from, True
    if then.html is not None:
        yield "then.html", then.html, False
    for i, entry in enumerate(then.notify):
        yield from ((f"then.notify[{i}].{p}", s, False) for p, s in _strings(entry.params))


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")


def _unguarded(source: str, *, is_expression: bool) -> list[str]:
    try:
        if is_expression:
            tree: nodes.Node = Parser(_ENV, source, state="variable").parse_expression()
        else:
            tree = _ENV.parse(source)
    except TemplateError:  # the loader reports syntax; nothing to add here
        return []
    found: list[str] = []
    _visit(tree, _NONE, found)
    return list(dict.fromkeys(found))


def _lookup(node: nodes.Node) -> tuple[str, str, str] | None:
    """(name, key, text) when ``node`` is ``NAME[key]`` or ``NAME.key`` on a lookup name."""
    if isinstance(node, nodes.Getitem | nodes.Getattr) and isinstance(node.node, nodes.Name):
        name = node.node.name
        if name not in LOOKUP_NAMES:
            return None
        if isinstance(node, nodes.Getattr):
            if node.attr in SAFE_METHODS:
                return None
            return name, node.attr.lower(), f"{name}.{node.attr}"
        arg = node.arg
        if isinstance(arg, nodes.Const):
            return name, str(arg.value).lower(), f"{name}[{arg.value!r}]"
        return name, "", f"{name}[...]"
    return None


def _guards(test: nodes.Node, *, negated: bool = False) -> Guard:
    """The lookups ``test`` proves present when it is true (``negated``: when it is false)."""
    if isinstance(test, nodes.Not):
        return _guards(test.node, negated=not negated)
    if isinstance(test, nodes.And if not negated else nodes.Or):
        return _guards(test.left, negated=negated) | _guards(test.right, negated=negated)
    if isinstance(test, nodes.Test) and test.name in ("defined", "undefined"):
        found = _lookup(test.node)
        proves = (test.name == "defined") != negated
        return frozenset({found[:2]}) if found is not None and proves else _NONE
    if isinstance(test, nodes.Compare) and len(test.ops) == 1 and isinstance(test.expr, nodes.Const):
        operand = test.ops[0]
        if isinstance(operand.expr, nodes.Name) and operand.expr.name in LOOKUP_NAMES:
            proves = (operand.op == "in") != negated
            if operand.op in ("in", "notin") and proves:
                return frozenset({(operand.expr.name, str(test.expr.value).lower())})
    return _NONE


def _visit(node: nodes.Node, guarded: Guard, found: list[str]) -> None:
    if isinstance(node, nodes.Test) and node.name in ("defined", "undefined") and _lookup(node.node):
        return
    if (
        isinstance(node, nodes.Filter)
        and node.name in DEFAULT_FILTERS
        and node.node is not None
        and _lookup(node.node) is not None
    ):
        for child in [*node.args, *node.kwargs]:
            _visit(child, guarded, found)
        return
    lookup = _lookup(node)
    if lookup is not None and lookup[:2] not in guarded:
        found.append(lookup[2])
    if isinstance(node, nodes.And | nodes.Or):
        _visit(node.left, guarded, found)
        _visit(node.right, guarded | _guards(node.left, negated=isinstance(node, nodes.Or)), found)
        return
    if isinstance(node, nodes.CondExpr):
        _visit(node.test, guarded, found)
        _visit(node.expr1, guarded | _guards(node.test), found)
        if node.expr2 is not None:
            _visit(node.expr2, guarded | _guards(node.test, negated=True), found)
        return
    if isinstance(node, nodes.If):
        _visit(node.test, guarded, found)
        for child in node.body:
            _visit(child, guarded | _guards(node.test), found)
        otherwise = guarded | _guards(node.test, negated=True)
        for child in [*node.elif_, *node.else_]:
            _visit(child, otherwise, found)
        return
    for child in node.iter_child_nodes():
        _visit(child, guarded, found)


__all__ = ["LOOKUP_NAMES", "unguarded_lookups"]
