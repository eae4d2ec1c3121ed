"""Rules: every provider decision, configured in the database.

Rules files (YAML) are validated by :mod:`provider.rules.loader`, stored by
:mod:`provider.rules.store`, compiled and evaluated by :mod:`provider.rules.engine`
over the call context of :mod:`provider.rules.context`, in the sandbox of
:mod:`provider.rules.environment` (its filters and method calls in
:mod:`provider.rules.checked`), every evaluation bounded by :mod:`provider.rules.limits`. A serving process uses :func:`build_evaluator`.
"""

from __future__ import annotations

from provider.db.session import Database
from provider.domain import RuleEvaluator
from provider.rules.evaluator import StoredRules
from provider.rules.limits import RuleLimits
from provider.rules.store import RuleStore
from provider.settings import Settings


def build_evaluator(settings: Settings, database: Database) -> RuleEvaluator:
    """The rule evaluator for a serving process.

    It caches the compiled rules and checks the rule-set version in ``database`` at
    most every ``settings.rules_refresh_seconds``, reloading when it changed. Nothing
    is read until the first call. Every evaluation is bounded by the settings' rule limits; the ``opted_out`` test reads the
    suppression list in ``database``.
    """
    from provider.comms.optouts import DatabaseLookup  # the suppression list, for ``is opted_out``

    limits = RuleLimits(max_output=settings.rules_max_output, deadline_ms=settings.rules_deadline_ms)
    return StoredRules(
        RuleStore(database),
        refresh_seconds=settings.rules_refresh_seconds,
        limits=limits,
        optout_lookup=DatabaseLookup(database),
        read_only_vars=settings.read_only_vars,
    )
