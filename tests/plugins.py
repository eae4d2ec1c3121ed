"""Small, real in-tree implementations of the domain plug-in protocols, for tests of the call layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from provider.domain import (
    AcceptedEvent,
    Decision,
    Identity,
    IncomingEvent,
    JournalEntry,
    Notification,
    Operation,
    PendingEntry,
)
from provider.errors import AuthenticationFailed, DirectoryUnavailable, EventRejected
from provider.variables import InputVariables


@dataclass
class DictAuthenticator:
    """Users in a dict: {username: (password, Identity)}; ``down`` simulates an outage of its store."""

    users: dict[str, tuple[str, Identity]] = field(default_factory=dict)
    down: bool = False
    lookups: list[str] = field(default_factory=list)

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        if self.down:
            raise DirectoryUnavailable("store down")
        entry = self.users.get(username.lower())
        if entry is None:
            raise AuthenticationFailed("unknown_user")
        if entry[0] != password:
            raise AuthenticationFailed("bad_password")
        return entry[1]

    def lookup(self, username: str) -> Identity | None:
        self.lookups.append(username)
        if self.down:
            raise DirectoryUnavailable("store down")
        entry = self.users.get(username.lower())
        return entry[1] if entry else None


@dataclass
class FixedRules:
    """Returns one fixed decision per operation and records what it was asked."""

    decisions: dict[Operation, Decision] = field(default_factory=dict)
    seen: list[tuple[Operation, InputVariables, Identity | None]] = field(default_factory=list)

    def evaluate(
        self, operation: Operation, variables: InputVariables, identity: Identity | None
    ) -> Decision:
        self.seen.append((operation, variables, identity))
        return self.decisions.get(operation, Decision())


@dataclass
class ListSink:
    """Keeps accepted events in a list; ``broken`` makes it refuse like a failed transaction."""

    events: list[tuple[IncomingEvent, list[Notification]]] = field(default_factory=list)
    broken: bool = False

    def accept(
        self,
        event: IncomingEvent,
        notifications: Sequence[Notification],
        rule_errors: Sequence[tuple[str, str]] = (),
    ) -> AcceptedEvent:
        if self.broken:
            raise EventRejected("transaction failed")
        duplicate = any(e.fingerprint == event.fingerprint for e, _ in self.events)
        if not duplicate:
            self.events.append((event, list(notifications)))
        return AcceptedEvent(event_id=len(self.events), duplicate=duplicate, deliveries=len(notifications))


@dataclass
class RecordingJournal:
    """A call observer that keeps every entry in a list (the journal without a database)."""

    entries: list[JournalEntry] = field(default_factory=list)

    def record(self, entry: JournalEntry | PendingEntry) -> None:
        self.entries.append(entry if isinstance(entry, JournalEntry) else entry.build())
