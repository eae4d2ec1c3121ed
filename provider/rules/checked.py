"""The rules sandbox's filters, tests and method calls, each bounded by the active budget.

Every filter and test is wrapped (:func:`checked_filter`, :func:`checked_test`): it
checks the deadline, measures its non-scalar arguments before they are turned into text,
and a filter's result is counted (:meth:`~provider.rules.limits.Budget.settle`). Filters
and methods that can build more than their input are replaced by versions that size
their result from the arguments *first*: ``center``, ``indent``, ``wordwrap``,
``replace``, ``join``, ``format``, ``batch``, ``slice``, ``sum`` and the text methods
(``'x'.center(n)``, ``ljust``, ``zfill``, ``expandtabs``, ``replace``, ``join``,
``translate``; every integer argument of a built-in type's method is capped).
See :mod:`provider.rules.limits` for the limits themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from time import monotonic
from typing import Any

from jinja2 import filters as jf
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.utils import _PassArg, pass_environment, pass_eval_context

from provider.rules.limits import (
    ACTIVE,
    MAX_ITEMS,
    Budget,
    checked_join,
    current,
    percent_format_size,
    regex_search,
    regex_sub,
    text_size,
)

_BUILTIN_TYPES = (str, bytes, int, float, list, tuple, dict, set, frozenset)
_SCALARS = (str, int, float, bool, type(None))


def _checked_arguments(args: tuple[Any, ...], skip: int) -> Budget:
    """The active budget, after checking its deadline and measuring the non-scalar ``args``
    from position ``skip`` on (the context Jinja passes first is not measured)."""
    budget = ACTIVE.get()
    if monotonic() > budget.deadline:
        budget.check_time()
    for arg in args[skip:] if skip else args:  # no copy in the common case
        if not isinstance(arg, _SCALARS):
            budget.measure(arg)
    return budget


def checked_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` checking the deadline, measuring its arguments and counting its result."""
    skip = 1 if _PassArg.from_obj(func) is not None else 0

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        budget = _checked_arguments(args, skip)
        if kwargs:
            budget.measure_args(kwargs.values())
        result = func(*args, **kwargs)
        if type(result) is str:
            budget.charge(len(result))
            return result
        return budget.settle(result)

    return checked


def checked_test(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` checking the deadline and measuring its arguments."""
    skip = 1 if _PassArg.from_obj(func) is not None else 0

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _checked_arguments(args, skip)
        return func(*args, **kwargs)

    return checked


def _text(value: Any) -> str:
    return str(value)


# --- the rules' own tests and filters ------------------------------------------


def test_matching(value: Any, pattern: str) -> bool:
    if value is None:
        return False
    return regex_search(pattern, _text(value)) is not None


def test_startingwith(value: Any, prefix: str) -> bool:
    return value is not None and _text(value).startswith(prefix)


def test_endingwith(value: Any, suffix: str) -> bool:
    return value is not None and _text(value).endswith(suffix)


def filter_regex_search(value: Any, pattern: str, group: int | str = 0) -> str:
    match = regex_search(pattern, _text(value))
    if match is None:
        return ""
    return match.group(group) or ""


def filter_regex_replace(value: Any, pattern: str, replacement: str, count: int = 0) -> str:
    return regex_sub(pattern, replacement, _text(value), count=count)


def filter_split(value: Any, separator: str | None = None, maxsplit: int = -1) -> list[str]:
    bounded = MAX_ITEMS if maxsplit < 0 or maxsplit > MAX_ITEMS else maxsplit
    parts = _text(value).split(separator, bounded)
    current().allow_items(len(parts))
    return parts


# --- Jinja's filters that can build more than they are given -------------------


def _center(value: Any, width: int = 80) -> str:
    current().allow_text(width)
    return jf.do_center(value, width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = _text(s)
    unit = len(width) if isinstance(width, str) else width
    current().allow_text(len(text) + (text.count("\n") + 2) * max(unit, 0))
    return jf.do_indent(s, width, first, blank)


@pass_environment
def _wordwrap(  # noqa: PLR0917 - Jinja's wordwrap signature
    env: Any,
    s: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    text = _text(s)
    joiner = wrapstring if wrapstring is not None else env.newline_sequence
    breaks = min(len(text), len(text) // max(width, 1) + text.count(" ") + text.count("\n")) + 1
    current().allow_text(len(text) + breaks * len(joiner))
    return jf.do_wordwrap(env, s, width, break_long_words, wrapstring, break_on_hyphens)


def replaced_size(text: str, old: str, new: str, count: int | None) -> int:
    """The length of ``text.replace(old, new, count)``, without building it."""
    occurrences = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * max(len(new) - len(old), 0)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    current().allow_text(replaced_size(_text(s), _text(old), _text(new), count))
    return jf.do_replace(eval_ctx, s, old, new, count)


def _bounded_items(value: Iterable[Any], separator: int) -> list[Any]:
    """The items of ``value`` as a list, refused as soon as their text grows too long."""
    budget = current()
    limit = budget.max_value
    items: list[Any] = []
    total = 0
    for item in value:
        total += (len(item) if isinstance(item, str) else text_size(item, limit)) + separator
        if total > limit + separator:
            budget.allow_text(total)
        items.append(item)
    budget.allow_items(len(items))
    return items


@pass_eval_context
def _join(
    eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    if attribute is not None:
        value = map(jf.make_attrgetter(eval_ctx.environment, attribute), value)
    if not eval_ctx.autoescape:
        return checked_join(str(d), value)
    return jf.sync_do_join(eval_ctx, _bounded_items(value, len(_text(d))), d)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    percent_format_size(_text(value), kwargs or args, current())
    return jf.do_format(value, *args, **kwargs)


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    current().allow_items(linecount)
    return jf.do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    current().allow_items(slices)
    return jf.sync_do_slice(value, slices, fill_with)


@pass_environment
def _sum(env: Any, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0) -> Any:
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise TypeError("sum adds numbers: start must be a number")
    return jf.sync_do_sum(env, iterable, attribute, start)


#: The widest ``tojson`` indentation (it is repeated on every line of the result).
MAX_JSON_INDENT = 16


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any, indent: int | None = None) -> Any:
    if indent is not None and indent > MAX_JSON_INDENT:
        current().allow_text(current().max_value + 1)
    return jf.do_tojson(eval_ctx, value, indent)


@pass_eval_context
def _urlize(  # noqa: PLR0917 - Jinja's urlize signature
    eval_ctx: EvalContext,
    value: Any,
    trim_url_limit: int | None = None,
    nofollow: bool = False,
    target: str | None = None,
    rel: str | None = None,
    extra_schemes: Iterable[str] | None = None,
) -> str:
    # Every word may become <a href="word" rel=".." target="..">word</a>.
    text = _text(value)
    words = text.count(" ") + text.count("\n") + 1
    extra = len(_text(target or "")) + len(_text(rel or "")) + 64
    current().allow_text(3 * len(text) + words * extra)
    return jf.do_urlize(eval_ctx, value, trim_url_limit, nofollow, target, rel, extra_schemes)


REPLACED_FILTERS: Mapping[str, Callable[..., Any]] = {
    "tojson": _tojson,
    "urlize": _urlize,
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "replace": _replace,
    "join": _join,
    "format": _format,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
    "regex_search": filter_regex_search,
    "regex_replace": filter_regex_replace,
    "split": filter_split,
}

RULES_TESTS: Mapping[str, Callable[..., Any]] = {
    "matching": test_matching,
    "startingwith": test_startingwith,
    "endingwith": test_endingwith,
}


# --- method calls ---------------------------------------------------------------


def _check_text_method(owner: str | bytes, name: str, args: tuple[Any, ...], budget: Budget) -> None:
    if name == "expandtabs":
        tabsize = args[0] if args else 8
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        budget.allow_text(len(owner) + tabs * max(tabsize, 0))
    elif name == "replace" and len(args) >= 2 and isinstance(owner, str):
        count = args[2] if len(args) > 2 else None
        budget.allow_text(replaced_size(owner, _text(args[0]), _text(args[1]), count))
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((text_size(v, budget.max_value) for v in args[0].values()), default=1)
        budget.allow_text(len(owner) * max(longest, 1))


def call_checked(context: Context, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``obj`` from a rule: deadline, arguments measured, size-checked methods, result counted."""
    budget = current()
    budget.check_time()
    budget.measure_args(args)
    if kwargs:
        budget.measure_args(kwargs.values())
    owner = getattr(obj, "__self__", None)
    if owner is not None and (isinstance(owner, _BUILTIN_TYPES) or owner in _BUILTIN_TYPES):
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int):
                budget.allow_text(abs(arg))
        if isinstance(owner, str | bytes):
            name = getattr(obj, "__name__", "")
            if name == "join" and isinstance(owner, str) and len(args) == 1 and not kwargs:
                return checked_join(owner, args[0], convert=_must_be_text)
            _check_text_method(owner, name, args, budget)
    return budget.settle(context.call(obj, *args, **kwargs))


def _must_be_text(item: Any) -> str:
    raise TypeError(f"sequence item: expected str instance, {type(item).__name__} found")
