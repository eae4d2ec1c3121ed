"""How much one call's rule evaluation may compute: time, text, lists, integers, regexes.

Rules are written by admins, but a portal user controls much of what they read
(``subject``, custom fields), and a mistaken rule must not take a worker down. Every
evaluation therefore runs under a :class:`Budget`, made from :class:`RuleLimits` when
the call's :class:`~provider.rules.environment.Scope` is built and active (a context
variable, so per thread) while its rules run:

* **Time.** One deadline per call's evaluation (``ST_PROVIDER_RULES_DEADLINE_MS``,
  200 ms by default), checked *inside* the evaluation wherever work can repeat: every
  call (functions, methods, macros), filter and test, every intercepted operator, every
  loop iteration, ``range`` and every rendered output. Regular expressions get the time
  left as their timeout. Nothing runs in another thread: past the deadline the
  evaluation raises :class:`~provider.errors.RuleLimitExceeded` where it stands.
* **Text and lists.** A rendered template is at most ``max_output`` characters
  (``ST_PROVIDER_RULES_MAX_OUTPUT``, 64 KiB). A text or list an operation builds is at
  most :attr:`RuleLimits.max_value` characters (16 x ``max_output``, estimated for lists
  as the length of their text form) and :data:`MAX_ITEMS` items; all the text one call
  builds together is at most :attr:`RuleLimits.max_total` (256 x ``max_output``). Sizes
  are computed from the operands *before* the value is built (``'a' * n``, ``join``,
  ``center``, ``%`` and ``format`` widths, ``replace`` ...), so a template that would
  allocate gigabytes fails at once without allocating them.
* **Integers.** ``*`` and ``**`` refuse results over :data:`MAX_INT_BITS` bits.
* **Regular expressions** use the ``regex`` module with its ``timeout``. It accepts the
  syntax of :mod:`re` that existing rules use (backreferences, lookarounds, which
  google-re2's linear-time engine refuses), needs no native library beyond its wheel,
  and its timeout bounds any pattern, including those it does not optimise itself.

Hitting any limit raises :class:`~provider.errors.RuleLimitExceeded` (``limit`` says
which); the engine treats it as the rule's error (a deny rule then denies).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from re import _constants as _sre  # type: ignore[attr-defined]
from re import _parser as _sre_parse  # type: ignore[attr-defined]
from typing import Any

import regex
from jinja2.runtime import markup_join, str_join
from jinja2.utils import Namespace
from markupsafe import Markup, escape

from provider.errors import RuleLimitExceeded

DEFAULT_MAX_OUTPUT = 65_536
DEFAULT_DEADLINE_MS = 200
#: Items in one list (or ``range``) a rule may build.
MAX_ITEMS = 100_000
#: Bits of an integer ``*`` and ``**`` may produce (about 1,200 decimal digits).
MAX_INT_BITS = 4_096
#: How much longer than its input escaping may make a text (``"`` -> ``&#34;``).
ESCAPE_FACTOR = 6
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class RuleLimits:
    """The configured limits of one call's rule evaluation."""

    max_output: int = DEFAULT_MAX_OUTPUT
    deadline_ms: int = DEFAULT_DEADLINE_MS

    @property
    def max_value(self) -> int:
        """The longest text (or text form of a list) one operation may build."""
        return 16 * self.max_output

    @property
    def max_total(self) -> int:
        """All the text one call's evaluation may build, together."""
        return 256 * self.max_output


DEFAULT_LIMITS = RuleLimits()


class Budget:
    """What one call's evaluation may still spend. Not shared between threads."""

    __slots__ = ("_total", "built", "deadline", "limits", "max_value")

    def __init__(self, limits: RuleLimits = DEFAULT_LIMITS, *, bounded: bool = True) -> None:
        self.limits = limits
        self.max_value = limits.max_value
        self.deadline = time.monotonic() + limits.deadline_ms / 1000 if bounded else math.inf
        self._total = limits.max_total if bounded else math.inf
        self.built = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RuleLimitExceeded("deadline", f"the rules took longer than {self.limits.deadline_ms} ms")

    def time_left(self) -> float | None:
        """Seconds until the deadline (a regex timeout), ``None`` without one; raises when past."""
        if self.deadline == math.inf:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.check_time()
        return max(left, 0.001)

    def allow_text(self, length: float) -> None:
        """Refuse building a text of (estimated) ``length`` characters."""
        if length > self.max_value:
            raise RuleLimitExceeded("value", f"a text longer than {self.max_value} characters")

    def allow_items(self, count: int) -> None:
        if count > MAX_ITEMS:
            raise RuleLimitExceeded("items", f"a list longer than {MAX_ITEMS} items")

    def allow_int_bits(self, bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise RuleLimitExceeded("integer", f"an integer larger than {MAX_INT_BITS} bits")

    def charge(self, length: int) -> None:
        """Count ``length`` characters just built against the value and total limits."""
        if length > self.max_value:  # allow_text, inlined: every rendered output passes here
            self.allow_text(length)
        self.built += length
        if self.built > self._total:
            raise RuleLimitExceeded("total", f"more than {self._total} characters built in one call")

    def measure(self, value: Any) -> int:
        """The length of ``value``'s text form (estimated), refusing one over ``max_value``."""
        size = text_size(value, self.max_value)
        self.allow_text(size)
        return size

    def measure_args(self, args: Iterable[Any]) -> None:
        for arg in args:
            if not isinstance(arg, _SCALARS):
                self.measure(arg)

    def settle(self, result: Any) -> Any:
        """Check (and count) a value an operation built; returns it."""
        if isinstance(result, str | bytes):
            self.charge(len(result))
        elif isinstance(result, list | tuple | dict | set | frozenset):
            self.allow_items(len(result))
            self.charge(self.measure(result))
        elif isinstance(result, Namespace):
            self.measure(result)
        return result


UNBOUNDED = Budget(bounded=False)
ACTIVE: ContextVar[Budget] = ContextVar("provider_rules_budget", default=UNBOUNDED)


def current() -> Budget:
    """The active evaluation's budget (outside one: size limits only, no deadline)."""
    return ACTIVE.get()


def activate(budget: Budget) -> Token[Budget]:
    """Make ``budget`` the active one in this thread; give the token to :func:`deactivate`."""
    return ACTIVE.set(budget)


def deactivate(token: Token[Budget]) -> None:
    ACTIVE.reset(token)


def text_size(value: Any, limit: int) -> int:
    """About ``len(str(value))``, walking lists and mappings; stops once over ``limit``.

    Each item costs at least its separator, so the walk takes at most ``limit`` steps
    however the value shares references (``[x] * n`` counts ``x`` ``n`` times).
    """
    if isinstance(value, str | bytes):
        return len(value)
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 4
        elif isinstance(item, bool | float | type(None)):
            total += 24
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, Namespace):
            stack.append(item._Namespace__attrs)
        else:
            total += 64
        if total > limit:
            break
    return total


def checked_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, checking the deadline at every iteration."""
    budget = current()
    for item in iterable:
        budget.check_time()
        yield item


def checked_range(*args: int) -> range:
    """``range`` of at most :data:`MAX_ITEMS` items."""
    budget = current()
    budget.check_time()
    result = range(*args)
    budget.allow_items(len(result))
    return result


def checked_join(separator: str, items: Iterable[Any], convert: Callable[[Any], str] = str) -> str:
    """``separator.join`` of the items' text, refused as soon as it would be too long."""
    budget = current()
    limit = budget.max_value
    parts: list[str] = []
    total = 0
    step = len(separator)
    for item in items:
        if isinstance(item, str):
            text = item
        else:
            budget.measure(item)
            text = convert(item)
        total += len(text) + step
        if total > limit + step:
            budget.allow_text(total)
        parts.append(text)
    return budget.settle(separator.join(parts))  # type: ignore[no-any-return]


def checked_concat(markup: bool, pieces: tuple[Any, ...]) -> str:
    """The ``~`` operator (``str_join``, or ``markup_join`` when autoescaping), sized first."""
    budget = current()
    budget.check_time()
    limit = budget.max_value
    total = 0
    for piece in pieces:
        total += len(piece) if isinstance(piece, str) else text_size(piece, limit)
        if total > limit:
            budget.allow_text(total)
    if markup:
        if total * ESCAPE_FACTOR > limit and any(hasattr(p, "__html__") for p in pieces):
            # Escaping grows each plain piece at most ESCAPE_FACTOR times: size it exactly.
            budget.allow_text(sum(len(escape(p)) for p in pieces))
        return budget.settle(markup_join(pieces))  # type: ignore[no-any-return]
    return budget.settle(str_join(pieces))  # type: ignore[no-any-return]


def checked_buffer_join(pieces: Iterable[str]) -> str:
    """``"".join`` for the buffers of macros and ``{% set %}`` blocks."""
    budget = current()
    limit = budget.max_value
    parts = []
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > limit:
            budget.allow_text(total)
        parts.append(piece)
    return budget.settle("".join(parts))  # type: ignore[no-any-return]


# --- operators ------------------------------------------------------------------

_PERCENT_SPEC = re.compile(r"%(?:\(([^)]*)\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?([a-zA-Z%])")
_DIGITS = re.compile(r"\d+")


def _times(left: Any, right: Any, budget: Budget) -> int | None:
    if isinstance(left, int) and isinstance(right, int):
        budget.allow_int_bits(left.bit_length() + right.bit_length())
        return None
    for seq, times in ((left, right), (right, left)):
        if not isinstance(times, int) or isinstance(seq, int):
            continue
        if isinstance(seq, str | bytes):
            budget.allow_text(len(seq) * times)
        elif isinstance(seq, list | tuple):
            budget.allow_items(len(seq) * times)
            size = text_size(seq, budget.max_value) * max(times, 0)
            budget.allow_text(size)
            return size
    return None


def _power(left: Any, right: Any, budget: Budget) -> None:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        budget.allow_int_bits(left.bit_length() * right)


def _plus(left: Any, right: Any, budget: Budget) -> int | None:
    if isinstance(left, str | bytes) and isinstance(right, str | bytes):
        factor = ESCAPE_FACTOR if isinstance(left, Markup) or isinstance(right, Markup) else 1
        budget.allow_text((len(left) + len(right)) * factor)
    elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
        budget.allow_items(len(left) + len(right))
        size = text_size(left, budget.max_value) + text_size(right, budget.max_value)
        budget.allow_text(size)
        return size
    return None


def percent_format_size(template: str, args: Any, budget: Budget) -> None:
    """Refuse ``template % args`` when its widths or substitutions would make it too long."""
    if "%" not in template:
        return
    limit = budget.max_value
    values = tuple(args.values()) if isinstance(args, dict) else args if isinstance(args, tuple) else (args,)
    largest = max((text_size(v, limit) for v in values), default=0)
    factor = ESCAPE_FACTOR if isinstance(template, Markup) else 1
    total = len(template)
    for spec in _PERCENT_SPEC.finditer(template):
        for number in (spec.group(2), spec.group(3)):
            if number == "*":
                if any(isinstance(v, int) and abs(v) > limit for v in values):
                    budget.allow_text(limit + 1)
            elif number:
                total += int(number) if len(number) < 10 else limit + 1
        total += largest
        budget.allow_text(total * factor)


def binop(operator: str, apply: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    """``apply(left, right)`` for ``left <operator> right``, refused when its result would be too large."""
    budget = current()
    budget.check_time()
    sized = None
    if operator == "*":
        sized = _times(left, right, budget)
    elif operator == "**":
        _power(left, right, budget)
    elif operator == "+":
        sized = _plus(left, right, budget)
    elif operator == "%" and isinstance(left, str):
        percent_format_size(left, right, budget)
    result = apply(left, right)
    if sized is not None:  # a list already sized from its operands: count it without walking it
        budget.charge(sized)
        return result
    return budget.settle(result)


def format_spec_size(format_spec: str, value: Any, budget: Budget) -> int:
    """The most text one ``str.format`` field may produce; refuses huge widths."""
    width = 0
    for digits in _DIGITS.findall(format_spec):
        if len(digits) > 9 or int(digits) > budget.max_value:
            budget.allow_text(budget.max_value + 1)
        width += int(digits)
    return width + text_size(value, budget.max_value)


# --- regular expressions --------------------------------------------------------


#: The most matching steps a search may take without the timeout (see :func:`linear_cost`):
#: a fraction of a millisecond of the regex engine's C loop.
LINEAR_STEPS = 200_000
#: The most ways through a pattern without repetition that :func:`linear_cost` accepts.
_MAX_PATHS = 64
# Substrings whose meaning differs between the ``regex`` module and ``re``'s parser (sets
# inside sets, set operations, fuzzy matching and repeats in braces) or that make ``re``'s
# parser warn (the same, conditionals): such patterns keep the timeout.
_NOT_ANALYSED = ("{", "[[", "--", "&&", "~~", "||", "(?(")
# Nodes of ``re``'s parse tree that match at most one character or none, without branching.
_SINGLE_NODES = frozenset({_sre.LITERAL, _sre.NOT_LITERAL, _sre.ANY, _sre.IN, _sre.AT})


def _paths(items: Any) -> int | None:
    """How many ways there are through the parsed ``items``; ``None`` when they repeat,
    refer back to a group, or branch more than :data:`_MAX_PATHS` ways."""
    total = 1
    for op, value in items:
        if op in _SINGLE_NODES:
            continue
        if op is _sre.SUBPATTERN:
            ways = _paths(value[-1])
        elif op is _sre.BRANCH:
            counts = [_paths(branch) for branch in value[1]]
            ways = None if None in counts else sum(c for c in counts if c is not None)
        elif op in {_sre.ASSERT, _sre.ASSERT_NOT}:
            inner = _paths(value[1])
            ways = None if inner is None else inner + 1
        else:  # repeats, backreferences, conditionals, atomic groups
            return None
        if ways is None:
            return None
        total *= ways
        if total > _MAX_PATHS:
            return None
    return total


def linear_cost(pattern: str) -> int | None:
    """The steps one search position may cost ``pattern`` at most, when it cannot backtrack
    catastrophically; ``None`` when it might (or when that cannot be shown).

    Only patterns without any repetition (``*``, ``+``, ``?``, ``{}``), backreference,
    conditional or atomic group qualify, with at most :data:`_MAX_PATHS` ways through their
    alternatives. A backtracking engine tries each way at most once per start position, and
    each way costs at most the pattern's length: a search of a text of length ``n`` then
    takes at most ``(n + 1) * cost`` steps, so :func:`regex_search` skips the timeout when
    that is at most :data:`LINEAR_STEPS`. The analysis uses ``re``'s parser; anything it
    does not read as the ``regex`` module does (see ``_NOT_ANALYSED``) or cannot parse
    keeps the timeout.
    """
    if any(part in pattern for part in _NOT_ANALYSED):
        return None
    try:
        parsed = _sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - whatever re's parser refuses (or warns about) keeps the timeout
        return None
    paths = _paths(parsed)
    return None if paths is None else paths * (len(pattern) + 1)


class _Compiled:
    """A pattern compiled once, with its :func:`linear_cost`."""

    __slots__ = ("cost", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern: regex.Pattern[str] = regex.compile(pattern)
        self.cost = linear_cost(pattern)


_COMPILED: dict[str, _Compiled] = {}
_COMPILED_MAX = 512


def _compiled(pattern: str) -> _Compiled:
    """``pattern`` compiled once (the module's own cache is several times slower to consult)."""
    compiled = _COMPILED.get(pattern)
    if compiled is None:
        compiled = _Compiled(pattern)
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()  # patterns built from call inputs must not grow it without end
        _COMPILED[pattern] = compiled
    return compiled


def _regex_error(exc: TimeoutError, pattern: Any) -> RuleLimitExceeded:
    return RuleLimitExceeded("regex", f"the regular expression {str(pattern)[:80]!r} ran out of time")


def regex_search(pattern: str, text: str) -> regex.Match[str] | None:
    """``regex.search`` with the time left as its timeout.

    A pattern that provably cannot backtrack catastrophically (:func:`linear_cost`) over a
    text short enough that the search stays within :data:`LINEAR_STEPS` is searched
    without the timeout (several times cheaper); the deadline is still checked first.
    """
    budget = current()
    compiled = _compiled(pattern)
    cost = compiled.cost
    if cost is not None and (len(text) + 1) * cost <= LINEAR_STEPS:
        if time.monotonic() > budget.deadline:
            budget.check_time()
        return compiled.pattern.search(text)
    try:
        return compiled.pattern.search(text, timeout=budget.time_left())
    except TimeoutError as exc:
        raise _regex_error(exc, pattern) from exc


def linear_search(pattern: str, text: str) -> bool | None:
    """Whether ``pattern`` is found in ``text`` when :func:`regex_search` would search it without
    a timeout (it would check the deadline first); ``None`` when it would use the timeout."""
    compiled = _compiled(pattern)
    cost = compiled.cost
    if cost is None or (len(text) + 1) * cost > LINEAR_STEPS:
        return None
    return compiled.pattern.search(text) is not None


def regex_sub(pattern: str, replacement: str, text: str, count: int = 0) -> str:
    """``regex.sub`` with the timeout, sizing each replacement before making it."""
    budget = current()
    limit = budget.max_value
    total = len(text)
    references = replacement.count("\\") + 1

    def expand(match: regex.Match[str]) -> str:
        nonlocal total
        budget.check_time()
        spans = (match.span(group) for group in range(match.re.groups + 1))
        longest = max(end - start for start, end in spans)
        total += len(replacement) + references * max(longest, 0)
        if total > limit:
            budget.allow_text(total)
        return str(match.expand(replacement))

    try:
        result = _compiled(pattern).pattern.sub(expand, text, count=count, timeout=budget.time_left())
    except TimeoutError as exc:
        raise _regex_error(exc, pattern) from exc
    return budget.settle(result)  # type: ignore[no-any-return]


def compile_check(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid regular expression, or ``None``."""
    try:
        regex.compile(pattern)
    except regex.error as exc:
        return str(exc)
    return None
