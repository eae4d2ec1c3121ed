"""Events: NotifyEventFired stored in a transactional outbox and delivered by workers.

- :mod:`provider.events.outbox`: the :class:`~provider.domain.EventSink` (event and
  deliveries in one transaction, de-duplication of repeated calls);
- :mod:`provider.events.worker`: claims, sends, records, retries
  (:func:`~provider.events.worker.run_worker`, :func:`~provider.events.worker.start_worker_thread`
  for the worker embedded in ``st-provider serve``);
- :mod:`provider.events.retry`: the pure retry policy;
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
