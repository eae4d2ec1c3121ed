"""The rule evaluator of a serving process: compiled rules cached, refreshed on change.

:class:`StoredRules` keeps the compiled :class:`~provider.rules.engine.RuleSet` of
the version it last loaded. At most every ``refresh_seconds`` one call asks the
database for the rule-set version (one primary-key lookup); only when it changed is
the whole set read and compiled again (rules whose stored form did not change reuse
their compiled form). Other threads keep evaluating with the previous set meanwhile,
so a change made by ``st-provider rules ...`` on any host reaches every worker on
every host within about ``refresh_seconds``, without a restart.

Failure behaviour: if the database cannot be read on a later check, the cached set
stays in use (logged as ``rules.refresh_failed``) and the check is retried after the
next interval. If the very first load fails, :meth:`StoredRules.evaluate` raises
StorageError: the call is answered with a fault rather than decided without the
rules (a deny rule must not silently disappear). A stored rule that no longer
compiles is skipped and logged; the others apply.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

from provider.comms.templates import global_variables
from provider.db.session import Database
from provider.domain import Decision, Identity, Method, RuleEvaluator
from provider.errors import StorageError
from provider.metrics import RULE_ERRORS, RULES_RELOADED
from provider.rules.engine import CompiledRule, RuleCompileError, RuleSet, compile_rule
from provider.rules.limits import DEFAULT_LIMITS, RuleLimits
from provider.rules.optout_test import OptOutLookup, lookup_scope
from provider.rules.store import RuleStore, Snapshot
from provider.settings import Settings
from provider.variables import InputVariables

log = logging.getLogger("provider.rules")


class StoredRules:
    """A :class:`~provider.domain.RuleEvaluator` over the rules in the database."""

    def __init__(
        self,
        store: RuleStore,
        *,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        limits: RuleLimits = DEFAULT_LIMITS,
        optout_lookup: OptOutLookup | None = None,
        read_only_vars: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        self._optout_lookup = optout_lookup
        self._read_only_vars = dict(read_only_vars or {})
        self._limits = limits
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._rule_set: RuleSet | None = None
        self._checked_at = 0.0
        self._compiled: dict[str, CompiledRule] = {}

    def evaluate(self, operation: Method, variables: InputVariables, identity: Identity | None) -> Decision:
        """The decision of the current rules for one call (see the module docstring)."""
        rule_set = self.rule_set()
        with lookup_scope(self._optout_lookup):
            return rule_set.evaluate(operation, variables, identity, limits=self._limits)

    def rule_set(self) -> RuleSet:
        """The current compiled rules, checking the version when the interval has passed."""
        current = self._rule_set
        now = self._clock()
        if current is not None and now - self._checked_at < self._refresh_seconds:
            return current
        if current is not None:
            # Someone else is already checking: keep serving what we have.
            if not self._lock.acquire(blocking=False):
                return current
        else:
            self._lock.acquire()
        try:
            current = self._rule_set
            if current is not None and now - self._checked_at < self._refresh_seconds:
                return current
            return self._refresh(current, now)
        finally:
            self._lock.release()

    def _refresh(self, current: RuleSet | None, now: float) -> RuleSet:
        try:
            version = self._store.version()
            if current is not None and version == current.version:
                self._checked_at = now
                return current
            snapshot = self._store.snapshot()
        except StorageError as exc:
            if current is None:
                raise
            self._checked_at = now
            log.warning(
                "rules not refreshed; keeping the cached rule set",
                extra={
                    "event": "rules.refresh_failed",
                    "error": type(exc).__name__,
                    "version": current.version,
                },
            )
            return current
        rule_set = self._compile(snapshot)
        self._rule_set = rule_set
        self._checked_at = now
        RULES_RELOADED.inc()
        log.info(
            "rules loaded",
            extra={
                "event": "rules.reloaded",
                "version": rule_set.version,
                "rules": len(rule_set),
                "previous_version": current.version if current is not None else None,
                "pid": os.getpid(),
            },
        )
        return rule_set

    def _compile(self, snapshot: Snapshot) -> RuleSet:
        compiled: dict[str, CompiledRule] = {}
        for stored in snapshot.rules:
            if stored.rule is None:
                RULE_ERRORS.labels(rule=stored.name).inc()
                continue
            merged = [n.merged for n in stored.rule.then.notify]  # a changed template changes the rule
            key = json.dumps([stored.position, stored.mapping, merged], sort_keys=True, default=str)
            rule = self._compiled.get(key)
            if rule is None:
                try:
                    rule = compile_rule(stored.rule, stored.position)
                except RuleCompileError as exc:
                    RULE_ERRORS.labels(rule=stored.name).inc()
                    log.error(
                        "stored rule does not compile; skipped",
                        extra={"event": "rules.error", "rule": stored.name, "error": type(exc).__name__},
                    )
                    continue
            compiled[key] = rule
        self._compiled = compiled
        variables = global_variables(self._read_only_vars, snapshot.variables)
        return RuleSet(compiled.values(), version=snapshot.version, variables=variables)


def build_evaluator(settings: Settings, database: Database) -> RuleEvaluator:
    """The rule evaluator for a serving process.

    It caches the compiled rules and checks the rule-set version in ``database`` at
    most every ``settings.rules_refresh_seconds``, reloading when it changed. Nothing
    is read until the first call. Every evaluation is bounded by the settings' rule
    limits; the ``opted_out`` test reads the suppression list in ``database``.
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
