"""Events: NotifyEventFired stored in a transactional outbox and delivered by workers."""

from __future__ import annotations

from provider.db.session import Database
from provider.domain import EventSink
from provider.settings import Settings


def build_sink(settings: Settings, database: Database) -> EventSink | None:
    """Where NotifyEventFired stores events and their deliveries."""
    return None
