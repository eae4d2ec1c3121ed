"""What an admin does to one delivery by hand: retry it now, or send it again. Audited.

One implementation, two front ends: ``st-provider deliveries retry ID`` / ``deliveries
resend ID`` and the console's **Retry now** / **Send again** buttons call these
functions. Each change and its :class:`~provider.db.events.DeliveryAudit` row are
written in one transaction (the actor is ``alice@host`` from the CLI, ``console:NAME``
from the console).

- :func:`retry_delivery`: a ``failed`` or ``pending`` delivery becomes due now, with its
  attempts and ``max_age`` counted afresh (a pending one stops waiting for its backoff).
- :func:`resend_delivery`: a ``delivered`` delivery is copied into a NEW pending delivery
  (same event, rule, channel, recipient, parameters, documents and template; a new
  partner de-duplication key, so the partner sends it again). The original is untouched.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from provider.comms.signin_scrub import code_id_of
from provider.db.base import utcnow
from provider.db.events import DELIVERED, FAILED, PENDING, DeliveryAudit, DeliveryRecord, EventRecord
from provider.db.session import Database
from provider.errors import DeliveryNotFound, ProviderError
from provider.events.reports import retry_values
from provider.events.wakeup import notify_workers

RETRY = "retry"
RESEND = "resend"
#: the statuses :func:`retry_delivery` accepts
RETRYABLE = (FAILED, PENDING)
#: the statuses :func:`resend_delivery` accepts
RESENDABLE = (DELIVERED,)


def _audit(
    session: Session,
    *,
    now: datetime,
    actor: str,
    command: str,
    action: str,
    delivery_id: int,
    new_delivery_id: int | None = None,
) -> None:
    session.add(
        DeliveryAudit(
            created_at=now,
            actor=actor[:200],
            command=command[:500],
            action=action,
            delivery_id=delivery_id,
            new_delivery_id=new_delivery_id,
        )
    )


def _refuse(session: Session, delivery_id: int, allowed: tuple[str, ...], what: str) -> ProviderError:
    status = session.scalar(select(DeliveryRecord.status).where(DeliveryRecord.id == delivery_id))
    if status is None:
        return DeliveryNotFound(f"no delivery has id {delivery_id}")
    return ProviderError(
        f"delivery {delivery_id} is {status}; only {' or '.join(allowed)} deliveries can be {what}"
    )


def _carries_sign_in_code(session: Session, delivery: DeliveryRecord) -> bool:
    fingerprint = session.scalar(select(EventRecord.fingerprint).where(EventRecord.id == delivery.event_id))
    return code_id_of(fingerprint) is not None


def retry_delivery(
    database: Database, delivery_id: int, *, actor: str, command: str, now: datetime | None = None
) -> None:
    """Make a failed or pending delivery due now (fresh attempts and age), audited.

    Raises DeliveryNotFound, or ProviderError when it is neither ``failed`` nor ``pending``
    (nothing is changed or audited then).
    """
    now = now or utcnow()
    with database.session(immediate=True) as session:
        result = session.execute(
            update(DeliveryRecord)
            .where(DeliveryRecord.id == delivery_id, DeliveryRecord.status.in_(RETRYABLE))
            .values(**retry_values(now))
            .execution_options(synchronize_session=False)
        )
        if cast("CursorResult[Any]", result).rowcount == 1:
            _audit(session, now=now, actor=actor, command=command, action=RETRY, delivery_id=delivery_id)
            notify_workers(session)  # due now: idle workers wake when this commits
            return
        error = _refuse(session, delivery_id, RETRYABLE, "retried")
    raise error


def resend_delivery(
    database: Database, delivery_id: int, *, actor: str, command: str, now: datetime | None = None
) -> int:
    """Queue a new delivery of a delivered one's notification (due now), audited; its id.

    Raises DeliveryNotFound, or ProviderError when the delivery is not ``delivered`` or carried a
    one-time sign-in code (a code is never sent twice; nothing is changed or audited then).
    """
    now = now or utcnow()
    with database.session(immediate=True) as session:
        original = session.scalar(
            select(DeliveryRecord).where(
                DeliveryRecord.id == delivery_id, DeliveryRecord.status.in_(RESENDABLE)
            )
        )
        if original is not None and _carries_sign_in_code(session, original):
            raise ProviderError(
                f"delivery {delivery_id} carried a one-time sign-in code and is not sent again: "
                "the customer asks for a new code"
            )
        if original is not None:
            copy = DeliveryRecord(
                event_id=original.event_id,
                rule=original.rule,
                channel=original.channel,
                recipient=original.recipient,
                params=dict(original.params),
                documents=dict(original.documents) if original.documents else None,
                template=original.template,
                key=uuid.uuid4().hex,
                status=PENDING,
                attempts=0,
                next_attempt_at=now,
                age_from=now,
                created_at=now,
                updated_at=now,
            )
            session.add(copy)
            session.flush()
            notify_workers(session)  # due now: idle workers wake when this commits
            _audit(
                session,
                now=now,
                actor=actor,
                command=command,
                action=RESEND,
                delivery_id=delivery_id,
                new_delivery_id=copy.id,
            )
            return copy.id
        error = _refuse(session, delivery_id, RESENDABLE, "sent again")
    raise error


@dataclass(frozen=True)
class AuditRow:
    created_at: datetime
    actor: str
    command: str
    action: str
    delivery_id: int
    new_delivery_id: int | None


def audit_of(database: Database, delivery_id: int) -> list[AuditRow]:
    """The manual actions on ``delivery_id``, and the re-send that made it, oldest first."""
    query = (
        select(DeliveryAudit)
        .where(or_(DeliveryAudit.delivery_id == delivery_id, DeliveryAudit.new_delivery_id == delivery_id))
        .order_by(DeliveryAudit.id)
    )
    with database.session() as session:
        return [
            AuditRow(a.created_at, a.actor, a.command, a.action, a.delivery_id, a.new_delivery_id)
            for a in session.scalars(query)
        ]
