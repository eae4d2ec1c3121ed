"""A real in-tree Channel for worker tests: it answers from a script and records every send.

Not a mock: it implements the :class:`~provider.channels.base.Channel` protocol the
way a partner channel does (returns a SendResult or raises ChannelError), and the
worker builds it through its channel factory from the ``channels`` table.
(This module holds helpers only; pytest finds no tests here.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from provider.channels.base import Channel, SendResult
from provider.db.events import DeliveryRecord
from provider.db.rules import ChannelRecord
from provider.db.session import Database
from provider.domain import AcceptedEvent, IncomingEvent, Notification
from provider.errors import ChannelError, ConfigError
from provider.events.outbox import Outbox

Answer = SendResult | BaseException | Callable[[Mapping[str, Any]], SendResult]


class WorkerKilled(BaseException):
    """Raised by a script to end a worker mid-batch, as SIGKILL would (nothing is recorded)."""


@dataclass
class Sent:
    channel: str
    params: Mapping[str, Any]
    key: str
    at: datetime


@dataclass
class Partner:
    """The far side of every scripted channel: scripts per channel name, and a log of sends."""

    scripts: dict[str, deque[Answer]] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    built: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    delay: float = 0.0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, channel: str, *answers: Answer) -> None:
        self.scripts.setdefault(channel, deque()).extend(answers)

    def answer(self, channel: str, params: Mapping[str, Any], key: str) -> SendResult:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            queue = self.scripts.get(channel)
            reply: Answer = queue.popleft() if queue else SendResult(partner_id=f"msg-{key[:8]}", status=200)
            self.sent.append(Sent(channel, dict(params), key, self.clock()))
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            return reply(params)
        return reply

    def keys(self, channel: str | None = None) -> list[str]:
        return [s.key for s in self.sent if channel is None or s.channel == channel]

    def factory(
        self,
        name: str,
        type_name: str,
        settings: Mapping[str, Any],
        *,
        environment: Mapping[str, str],
        timeout: float,
    ) -> Channel:
        if type_name != "scripted":
            raise ConfigError(f"channel {name!r}: unknown type {type_name!r}")
        for value in settings.values():
            if isinstance(value, str) and value.startswith("${") and value[2:-1] not in environment:
                raise ConfigError(f"channel {name!r}: environment variable {value[2:-1]} is not set")
        self.built.append((name, dict(settings)))
        return ScriptedChannel(name, self)


class ScriptedChannel:
    """Sends to a :class:`Partner`."""

    type_name = "scripted"

    def __init__(self, name: str, partner: Partner) -> None:
        self.name = name
        self.partner = partner

    def send(self, params: Mapping[str, Any], *, delivery_key: str) -> SendResult:
        return self.partner.answer(self.name, params, delivery_key)

    def close(self) -> None:
        self.partner.closed.append(self.name)


def http_error(
    status: int, *, retry_after: float | None = None, final: bool = False, code: str | None = None
) -> ChannelError:
    """What a partner channel raises for an HTTP error status."""
    return ChannelError(
        f"partner answered HTTP {status}",
        status=status,
        retry_after=retry_after,
        final=final,
        pause_channel=status in (429, 503),
        partner_code=code,
    )


class Clock:
    """A settable clock shared by the outbox and the workers."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def add_channel(database: Database, name: str, *, enabled: bool = True, **settings: Any) -> None:
    now = datetime.now(UTC)
    with database.session() as session:
        session.add(
            ChannelRecord(
                name=name, type="scripted", settings=settings, enabled=enabled, created_at=now, updated_at=now
            )
        )


def update_channel(database: Database, name: str, *, enabled: bool | None = None, **settings: Any) -> None:
    with database.session() as session:
        record = session.scalars(select(ChannelRecord).where(ChannelRecord.name == name)).one()
        if settings:
            record.settings = settings
        if enabled is not None:
            record.enabled = enabled
        record.updated_at = datetime.now(UTC)


_counter = iter(range(1, 10**9))


def enqueue(
    database: Database,
    at: datetime,
    *channels: str,
    to: str = "+15550100",
    params: Mapping[str, Any] | None = None,
) -> AcceptedEvent:
    """Accept one event (at ``at``) with one delivery per channel (``params``, or a small default)."""
    n = next(_counter)
    event = IncomingEvent(
        event_type=502000,
        event_name="Ticket Created",
        arguments={"ticketNumber": f"T-{n}"},
        variables=(("eventType", "502000"), ("args_ticketNumber", f"T-{n}")),
        received_at=at,
        fingerprint=f"fp-{n}-{at.timestamp()}",
    )
    values = dict(params) if params is not None else {"to": to, "text": f"ticket T-{n}", "n": n}
    notes = [Notification(rule="r", channel=c, params=values) for c in channels]
    return Outbox(database).accept(event, notes)


def deliveries(database: Database) -> list[DeliveryRecord]:
    with database.session() as session:
        return list(session.scalars(select(DeliveryRecord).order_by(DeliveryRecord.id)))
