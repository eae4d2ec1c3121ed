"""Recording finished sends: one attempt row each, and the delivery's new state.

What is recorded for one send is exactly what the worker always recorded (see
:mod:`provider.events.worker`): an attempt row (time, duration, HTTP status, partner
message id, redacted error, the next attempt's time) and the delivery's state
(``delivered``; ``pending`` with the retry policy's next attempt time; ``failed``), a
429/503 pausing the channel for every worker. What changed is that several finished
sends are recorded in **one transaction** (:meth:`Recorder.record`): the delivery rows
are locked in id order, each one is updated only if this worker may still record it
(a success always, unless another worker already delivered it; a failure only while
this worker holds its lease), then the updates and the attempt rows are written with one
statement each. A group is at most :data:`MAX_GROUP` sends, so SQLite's write lock is
never held long (NotifyEventFired needs it too).

If the transaction fails nothing of the group is recorded: the caller keeps the group and
tries again; if the worker dies first, the leases expire and the next worker records a
``lost`` attempt for each (the documented source of duplicates).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from provider import metrics
from provider.channels.base import SendResult
from provider.comms import optouts
from provider.db.events import (
    DELIVERED,
    FAILED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
    OUTCOME_RETRY,
    PENDING,
    SENDING,
    SUPPRESSED,
    DeliveryAttempt,
    DeliveryRecord,
)
from provider.db.session import Database
from provider.errors import ChannelError
from provider.events.channel_cache import ChannelCache
from provider.events.leases import Claimed, Leases
from provider.events.retry import decide
from provider.events.sending import Sent
from provider.redact import redact

log = logging.getLogger("provider.events.worker")

#: the most finished sends recorded in one transaction
MAX_GROUP = 50

_DELIVERIES = cast("Table", DeliveryRecord.__table__)
_ATTEMPTS = cast("Table", DeliveryAttempt.__table__)
#: executed with a list of ``{"_id": id, column: value, ...}``: sets the columns given
_UPDATE_BY_ID = update(_DELIVERIES).where(_DELIVERIES.c.id == bindparam("_id"))


@dataclass
class _Plan:
    """What recording one send writes, and what is logged afterwards."""

    item: Claimed
    success: bool
    values: dict[str, Any]
    attempt: dict[str, Any]
    log_level: int
    log_fields: dict[str, Any]
    metric: str
    pause: tuple[datetime, int | None] | None = None
    recorded: bool = field(default=False)


class Recorder:
    """Records one worker's finished sends (driven by the worker's thread)."""

    def __init__(
        self,
        database: Database,
        leases: Leases,
        channels: ChannelCache,
        *,
        worker: str,
        clock: Callable[[], datetime],
        random: Callable[[], float],
    ) -> None:
        self._db = database
        self._leases = leases
        self._channels = channels
        self._worker = worker
        self._clock = clock
        self._random = random

    def record(self, batch: Sequence[Sent]) -> None:
        """Record ``batch`` (at most :data:`MAX_GROUP`) in one transaction; StorageError if it fails."""
        if not batch:
            return
        finished = self._clock()
        plans = [self._plan(sent, finished) for sent in batch]
        with self._db.session(immediate=True) as session:
            self._write(session, plans, finished)
        for plan in plans:
            if plan.pause is not None:
                self._leases.remember_pause(plan.item.channel, plan.pause[0])
            metrics.DELIVERIES.labels(channel=plan.item.channel, outcome=plan.metric).inc()
            log.log(
                plan.log_level,
                plan.log_fields.pop("message"),
                extra={**plan.log_fields, "recorded": plan.recorded},
            )

    def _write(self, session: Session, plans: list[_Plan], finished: datetime) -> None:
        """Lock the group's rows (id order), update those this worker may record, insert every attempt.

        SQLAlchemy Core with plain parameter lists (no ORM objects or bulk-ORM bookkeeping):
        one locking SELECT, one executemany UPDATE per distinct set of columns (successes,
        retries, failures), one executemany INSERT.
        """
        ids = sorted(plan.item.id for plan in plans)
        rows = session.execute(
            select(_DELIVERIES.c.id, _DELIVERIES.c.status, _DELIVERIES.c.lease_owner)
            .where(_DELIVERIES.c.id.in_(ids))
            .order_by(_DELIVERIES.c.id)
            .with_for_update()
        ).all()
        state = {row.id: (row.status, row.lease_owner) for row in rows}
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for plan in plans:
            status, owner = state.get(plan.item.id, (None, None))
            if plan.success:
                # A success is the truth even if our lease ran out meanwhile.
                plan.recorded = status is not None and status != DELIVERED
            else:
                plan.recorded = status == SENDING and owner == self._leases.owner
            if plan.recorded:
                updates.setdefault(tuple(plan.values), []).append({"_id": plan.item.id, **plan.values})
        for group in updates.values():
            session.execute(_UPDATE_BY_ID, group)
        session.execute(insert(_ATTEMPTS), [plan.attempt for plan in plans])
        for plan in plans:
            if plan.pause is not None:
                until, status_code = plan.pause
                self._leases.pause(session, plan.item.channel, until, status_code, finished)

    # --- what one send records ---------------------------------------------------

    def _plan(self, sent: Sent, finished: datetime) -> _Plan:
        if isinstance(sent.outcome, SendResult):
            return self._success(sent, sent.outcome, finished)
        return self._failure(sent, sent.outcome, finished)

    def _attempt(self, sent: Sent, **fields: Any) -> dict[str, Any]:
        """The attempt row of ``sent`` (its number: ``attempts + 1``)."""
        row = {
            "delivery_id": sent.item.id,
            "number": sent.item.attempts + 1,
            "started_at": sent.job.started,
            "duration": sent.duration,
            "worker": self._worker,
            "http_status": None,
            "partner_id": None,
            "error": None,
            "next_attempt_at": None,
        }
        row.update(fields)
        return row

    def _success(self, sent: Sent, result: SendResult, finished: datetime) -> _Plan:
        item = sent.item
        number = item.attempts + 1
        partner_id = str(result.partner_id)[:200] if result.partner_id is not None else None
        values = {
            **_ended(number, finished, result.status),
            "status": DELIVERED,
            "finished_at": finished,
            "last_error": None,
            "partner_id": partner_id,
            "documents": _documents_as_json(result.documents),
        }
        attempt = self._attempt(
            sent, outcome=OUTCOME_DELIVERED, http_status=result.status, partner_id=partner_id
        )
        fields = {
            "message": "delivered",
            "event": "delivery.delivered",
            "delivery_id": item.id,
            "channel": item.channel,
            "attempt": number,
            "status": result.status,
            "partner_id": partner_id,
            "duration": round(sent.duration, 4),
        }
        return _Plan(item, True, values, attempt, logging.INFO, fields, "delivered")

    def _failure(self, sent: Sent, error: ChannelError, finished: datetime) -> _Plan:
        item = sent.item
        number = item.attempts + 1
        entry = self._channels.get(item.channel)
        secrets = entry.secrets if entry is not None else frozenset()
        outcome = decide(
            self._channels.policy(item.channel),
            status=error.status,
            final=error.final,
            retry_after=error.retry_after,
            pause_requested=error.pause_channel,
            attempt=number,
            age=(finished - item.age_from).total_seconds(),
            random=self._random,
        )
        message = redact(_error_text(error), secrets)
        retry = outcome.kind == "retry"
        next_attempt = finished + timedelta(seconds=outcome.wait) if retry else None
        values: dict[str, Any] = {**_ended(number, finished, error.status), "last_error": message}
        if next_attempt is not None:
            values.update(status=PENDING, next_attempt_at=next_attempt)
        else:
            values.update(status=FAILED, finished_at=finished)
        attempt = self._attempt(
            sent,
            outcome=OUTCOME_RETRY if retry else OUTCOME_FAILED,
            http_status=error.status,
            error=message,
            next_attempt_at=next_attempt,
        )
        fields = {
            "message": "delivery attempt failed",
            "event": "delivery.retry" if retry else "delivery.failed",
            "delivery_id": item.id,
            "channel": item.channel,
            "attempt": number,
            "status": error.status,
            "final": error.final,
            "reason": outcome.reason or None,
            "wait": round(outcome.wait, 3) if retry else None,
            "error": message,
        }
        pause = (finished + timedelta(seconds=outcome.pause), error.status) if outcome.pause else None
        level = logging.WARNING if retry else logging.ERROR
        return _Plan(item, False, values, attempt, level, fields, "retry" if retry else "failed", pause)

    # --- suppressed -----------------------------------------------------------------

    def suppressed(self, item: Claimed, found: optouts.Suppression) -> None:
        """``item`` is not sent: final status ``suppressed``, no attempt counted."""
        finished = self._clock()
        scopes = sorted({scope for found_scopes in found.removed.values() for scope in found_scopes})
        values = {
            "status": SUPPRESSED,
            "finished_at": finished,
            "updated_at": finished,
            "lease_owner": None,
            "lease_expires_at": None,
            "last_error": f"not sent: the recipient opted out ({', '.join(scopes)})",
        }
        with self._db.session(immediate=True) as session:
            owned = self._leases.owned(session, item.id, values, any_owner=False)
        metrics.DELIVERIES.labels(channel=item.channel, outcome="suppressed").inc()
        log.info(
            "delivery suppressed",
            extra={
                "event": "delivery.suppressed",
                "delivery_id": item.id,
                "channel": item.channel,
                "scopes": scopes,
                "recorded": owned,
            },
        )


def _ended(number: int, finished: datetime, status: int | None) -> dict[str, Any]:
    """The delivery columns every recorded attempt sets: its count, and the lease released."""
    return {
        "attempts": number,
        "updated_at": finished,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_status": status,
    }


def _error_text(error: ChannelError) -> str:
    """The failure as recorded (before redaction): the message, with the partner's code if it adds one."""
    text = str(error)
    if error.partner_code and error.partner_code not in text:
        text = f"{text} (partner code {error.partner_code})"
    return text


def _documents_as_json(documents: Mapping[str, Any]) -> dict[str, Any] | None:
    """The partner's documents as plain JSON data, any other value as its text (``None`` when none)."""
    if not documents:
        return None
    plain: dict[str, Any] = json.loads(json.dumps(dict(documents), default=str))
    return plain
