"""The rules test ``opted_out``: ``args.phone is opted_out('sms')``.

True when the address is on the suppression list for everything or for the given
kind (``sms``, ``email``; without one: for everything). The list is read through a
lookup the serving process injects (:func:`lookup_scope`, from
:class:`provider.comms.optouts.DatabaseLookup`), so the rules package depends on no
database: ``lookup(address, kind, timeout) -> bool``. Each call's answers are cached
(one query per address and kind per call), and every lookup gets the time left
before the rules' deadline; past it the evaluation stops like any other
(:class:`~provider.errors.RuleLimitExceeded` ``deadline``). Outside a scope (what-if,
validation) nobody is opted out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from provider.errors import RuleLimitExceeded
from provider.rules.limits import current

OptOutLookup = Callable[[str, "str | None", "float | None"], bool]
KINDS = frozenset({"sms", "email"})

_ACTIVE: ContextVar[tuple[OptOutLookup, dict[tuple[str, str | None], bool]] | None] = ContextVar(
    "optout_lookup", default=None
)


@contextmanager
def lookup_scope(lookup: OptOutLookup | None) -> Iterator[None]:
    """Evaluate the block's rules with ``lookup`` (and a fresh per-call cache)."""
    if lookup is None:
        yield
        return
    token = _ACTIVE.set((lookup, {}))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def test_opted_out(value: object, kind: str | None = None) -> bool:
    """``value is opted_out(kind)``; see the module docstring."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"opted_out: kind must be one of {', '.join(sorted(KINDS))}")
    active = _ACTIVE.get()
    if active is None or value is None or not str(value).strip():
        return False
    lookup, cache = active
    key = (str(value).strip(), kind)
    if key not in cache:
        budget = current()
        budget.check_time()
        try:
            cache[key] = lookup(key[0], kind, budget.time_left())
        except TimeoutError as exc:
            raise RuleLimitExceeded(
                "deadline", "the opt-out lookup took longer than the rules' deadline"
            ) from exc
    return cache[key]
