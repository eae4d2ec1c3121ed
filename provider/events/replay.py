"""``st-provider events replay ID``: evaluate a stored event again, adding missing deliveries.

The event's stored variables (never ``authPW``) are evaluated by the given rule
evaluator (the CLI passes the current stored rules) exactly as NotifyEventFired
evaluates them. Each resulting notification that the event does not already have a
delivery for -- same rule, channel and parameters, counted, so two equal
notifications need two deliveries -- becomes a new ``pending`` delivery; nothing
else is created, so replaying again creates nothing more. The event's rule errors
are replaced by those of the replay (NULL when none raised). One transaction, the
event row locked, so two replays at once cannot both add the same delivery.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from provider.db.base import utcnow
from provider.db.events import DeliveryRecord, EventRecord
from provider.db.session import Database
from provider.domain import Operation, RuleEvaluator
from provider.errors import EventNotFound
from provider.events.outbox import Outbox, error_list
from provider.variables import InputVariables


@dataclass(frozen=True)
class ReplayResult:
    event_id: int
    created: int
    already: int
    rule_errors: tuple[tuple[str, str], ...]


def _key(rule: str, channel: str, params: Mapping[str, Any]) -> str:
    plain = json.loads(json.dumps(dict(params), ensure_ascii=False, default=str))
    return json.dumps([rule[:200], channel[:200], plain], sort_keys=True, ensure_ascii=False)


def replay_event(database: Database, rules: RuleEvaluator, event_id: int) -> ReplayResult:
    """Evaluate event ``event_id`` with ``rules`` and add the deliveries it lacks (module docstring).

    Raises EventNotFound, EventRejected (parameters that are not plain data) or StorageError.
    """
    with database.session(immediate=True) as session:
        record = session.get(EventRecord, event_id, with_for_update=True)
        if record is None:
            raise EventNotFound(f"no event has id {event_id}")
        variables = InputVariables((str(name), str(value)) for name, value in record.variables)
        decision = rules.evaluate(Operation.NOTIFY_EVENT_FIRED, variables, None)
        existing = Counter(
            _key(d.rule, d.channel, d.params)
            for d in session.scalars(select(DeliveryRecord).where(DeliveryRecord.event_id == event_id))
        )
        missing = []
        for notification in decision.notifications:
            key = _key(notification.rule, notification.channel, notification.params)
            if existing[key] > 0:
                existing[key] -= 1
            else:
                missing.append(notification)
        created = Outbox.insert_deliveries(session, event_id, utcnow(), missing)
        record.rule_errors = error_list(decision.rule_errors)
    return ReplayResult(
        event_id=event_id,
        created=created,
        already=len(decision.notifications) - created,
        rule_errors=tuple(decision.rule_errors),
    )
