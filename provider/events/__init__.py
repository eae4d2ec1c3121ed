"""Events: NotifyEventFired stored in a transactional outbox and delivered by workers.

- :mod:`provider.events.outbox`: the :class:`~provider.domain.EventSink` (event and
  deliveries in one transaction, de-duplication of repeated calls);
- :mod:`provider.events.worker`: the delivery loop: sends, records, retries
  (``st-provider worker``; ``st-provider serve`` runs one as a child process);
- :mod:`provider.events.leases`: claiming due deliveries, their leases, channel pauses
  and rate-limit windows shared by every worker;
- :mod:`provider.events.sending`: concurrent sends (a bounded thread pool, per-channel
  windows); :mod:`provider.events.recording`: attempts recorded in groups;
- :mod:`provider.events.wakeup`: waking idle workers (PostgreSQL ``LISTEN/NOTIFY``, SQLite
  change polling);
- :mod:`provider.events.channel_cache`: the configured channels as a worker knows them
  (policy, channel built on first use);
- :mod:`provider.events.retry`: the pure retry decision over a channel's
  :class:`~provider.channels.policy.ChannelPolicy`;
- :mod:`provider.events.reports`: what the CLI and the gauges show.
"""

from __future__ import annotations

from provider.db.session import Database
from provider.domain import EventSink
from provider.events.outbox import Outbox
from provider.settings import Settings


def build_sink(settings: Settings, database: Database) -> EventSink | None:
    """Where NotifyEventFired stores events and their deliveries: the database outbox."""
    return Outbox(database, dedup_seconds=settings.event_dedup_seconds)
