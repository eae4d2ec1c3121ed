"""Rendering a message template for a preview (``templates render``; sends nothing).

The template's parameters are compiled as the engine compiles a ``notify`` entry
(an email template's ``html`` autoescaped) and rendered against a call context
(:func:`provider.rules.context.build_context` of a NotifyEventFired call: a stored
event's variables, or values given by the admin) with ``vars``, inside the rules
sandbox and its limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from provider.comms.templates import MessageTemplate
from provider.domain import Operation
from provider.rules.context import CONTEXT_NAMES, CaseInsensitiveDict, build_context
from provider.rules.engine import RuleCompileError
from provider.rules.environment import CompileError, Scope, TextTemplate, compile_text
from provider.rules.limits import DEFAULT_LIMITS, RuleLimits
from provider.variables import InputVariables


def _compile(node: Any, path: tuple[str | int, ...], html: bool, problems: list[tuple[Any, str]]) -> Any:
    if isinstance(node, str):
        try:
            return compile_text(node, CONTEXT_NAMES, html=html)
        except CompileError as exc:
            problems.extend((path, p) for p in exc.problems)
            return node
    if isinstance(node, Mapping):
        return {k: _compile(v, (*path, k), html, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_compile(v, (*path, i), html, problems) for i, v in enumerate(node)]
    return node


def _render(node: Any, scope: Scope) -> Any:
    if isinstance(node, TextTemplate):
        return node.render(scope)
    if isinstance(node, dict):
        return {k: _render(v, scope) for k, v in node.items()}
    if isinstance(node, list):
        return [_render(v, scope) for v in node]
    return node


def render_template(
    template: MessageTemplate,
    variables: Iterable[tuple[str, str]],
    global_vars: Mapping[str, str],
    *,
    limits: RuleLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """``template``'s parameters rendered for a NotifyEventFired call with ``variables``.

    Raises RuleCompileError when a parameter does not compile, and whatever a template
    raises when it renders (a missing variable: ``UndefinedError``; a limit: RuleLimitExceeded).
    """
    context = build_context(
        Operation.NOTIFY_EVENT_FIRED,
        InputVariables(tuple(variables)),
        None,
        CaseInsensitiveDict(global_vars.items()),
    )
    return render_in_context(template, context, limits=limits)


def render_in_context(
    template: MessageTemplate, context: Mapping[str, Any], *, limits: RuleLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """``template``'s parameters rendered against ``context`` (a :func:`build_context` result,
    possibly with more names set: a sign-in code's ``code`` and ``minutes``); raises as
    :func:`render_template`."""
    problems: list[tuple[Any, str]] = []
    compiled = {
        key: _compile(value, (key,), key in template.html_params, problems)
        for key, value in template.params.items()
    }
    if problems:
        raise RuleCompileError(template.name, problems)
    scope = Scope(context, limits)
    result: dict[str, Any] = scope.within(_render, compiled, scope)
    return result
