"""The suppression list: who asked not to be notified, and whether a delivery is suppressed.

An opt-out is an address (:mod:`provider.comms.addresses`: E.164 phone number or
lower-cased e-mail address) with a scope: ``all`` notifications, one message kind
(``kind:sms``, ``kind:email``) or one event type (``event:N``). Changes are audited
(``optout_audit``) with the actor of :func:`provider.rules.cli_support.change_actor`.

Which deliveries it applies to (:func:`suppression`): a channel type that declares a
recipient parameter (:attr:`~provider.channels.specs.ChannelSpec.recipient`: the SMS
``to`` of ``uniphore-sms``, the e-mail ``to`` of ``email``; other types have none),
on a channel whose ``category`` is ``transactional`` (the default) or
``promotional``. ``otp`` channels are never suppressed: a customer who asked for a
code gets it. An e-mail to several addresses goes to those not opted out; only when
every recipient is opted out is the delivery suppressed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from provider.channels.specs import SPECS
from provider.comms.addresses import AddressKind, InvalidAddress, normalise
from provider.db.base import utcnow
from provider.db.comms import OptOut, OptOutAudit
from provider.db.session import Database, storage_error
from provider.errors import ProviderError

ALL = "all"
KINDS: tuple[AddressKind, ...] = ("sms", "email")
#: categories the suppression list never applies to
EXEMPT_CATEGORIES = frozenset({"otp"})


class OptOutExists(ProviderError):
    """That address is already opted out with that scope."""


class OptOutNotFound(ProviderError):
    """No opt-out of that address with that scope."""


@dataclass(frozen=True)
class OptOutRow:
    address: str
    scope: str
    kind: str | None
    event_type: int | None
    reason: str | None
    actor: str
    created_at: datetime


def scope_of(kind: str | None, event_type: int | None) -> str:
    """``all``, ``kind:sms``/``kind:email`` or ``event:N``; raises ProviderError for both or a bad kind."""
    if kind is not None and event_type is not None:
        raise ProviderError("an opt-out is of one kind or of one event type, not both")
    if kind is not None:
        if kind not in KINDS:
            raise ProviderError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
        return f"kind:{kind}"
    if event_type is not None:
        return f"event:{int(event_type)}"
    return ALL


def _scopes(kind: str | None, event_type: int | None) -> list[str]:
    """Every scope that suppresses a message of ``kind`` for ``event_type``."""
    scopes = [ALL]
    if kind is not None:
        scopes.append(f"kind:{kind}")
    if event_type is not None:
        scopes.append(f"event:{int(event_type)}")
    return scopes


def _row(record: OptOut) -> OptOutRow:
    return OptOutRow(
        address=record.address,
        scope=record.scope,
        kind=record.kind,
        event_type=record.event_type,
        reason=record.reason,
        actor=record.actor,
        created_at=record.created_at,
    )


# --- the list ----------------------------------------------------------------------


def add(
    database: Database,
    address: str,
    *,
    kind: str | None = None,
    event_type: int | None = None,
    reason: str | None = None,
    actor: str,
    command: str,
) -> OptOutRow:
    """Opt ``address`` out (normalised first); raises InvalidAddress, OptOutExists."""
    key = normalise(address)
    scope = scope_of(kind, event_type)
    now = utcnow()
    record = OptOut(
        address=key,
        scope=scope,
        kind=kind,
        event_type=event_type,
        reason=(reason or None) and reason[:500],
        actor=actor,
        created_at=now,
    )
    try:
        with database.session(immediate=True) as session:
            if session.scalar(select(OptOut.id).where(OptOut.address == key, OptOut.scope == scope)):
                raise OptOutExists(f"{key} is already opted out ({scope})")
            session.add(record)
            session.add(
                _audit("add", key, scope, reason=record.reason, actor=actor, command=command, now=now)
            )
    except ProviderError as exc:
        if isinstance(exc.__cause__, IntegrityError):  # a concurrent add won
            raise OptOutExists(f"{key} is already opted out ({scope})") from exc
        raise
    return _row(record)


def remove(
    database: Database,
    address: str,
    *,
    kind: str | None = None,
    event_type: int | None = None,
    actor: str,
    command: str,
) -> OptOutRow:
    """Remove one opt-out of ``address``; raises InvalidAddress, OptOutNotFound."""
    key = normalise(address)
    scope = scope_of(kind, event_type)
    with database.session(immediate=True) as session:
        record = session.scalar(select(OptOut).where(OptOut.address == key, OptOut.scope == scope))
        if record is None:
            raise OptOutNotFound(f"{key} is not opted out ({scope})")
        row = _row(record)
        session.delete(record)
        session.add(_audit("remove", key, scope, reason=None, actor=actor, command=command, now=utcnow()))
    return row


def _audit(
    action: str, address: str, scope: str, *, reason: str | None, actor: str, command: str, now: datetime
) -> OptOutAudit:
    return OptOutAudit(
        created_at=now,
        actor=actor,
        command=command[:500],
        action=action,
        address=address,
        scope=scope,
        reason=reason,
    )


def list_optouts(database: Database, address: str | None = None) -> list[OptOutRow]:
    """Every opt-out (of ``address`` when given, normalised first), oldest first."""
    query = select(OptOut).order_by(OptOut.id)
    if address is not None:
        query = query.where(OptOut.address == normalise(address))
    with database.session() as session:
        return [_row(r) for r in session.scalars(query)]


def matching_scopes(
    session: Session, addresses: Sequence[str], kind: str | None, event_type: int | None
) -> dict[str, list[str]]:
    """Normalised address -> the scopes it is opted out of that apply (only addresses that have some)."""
    if not addresses:
        return {}
    query = select(OptOut.address, OptOut.scope).where(
        OptOut.address.in_(list(addresses)), OptOut.scope.in_(_scopes(kind, event_type))
    )
    found: dict[str, list[str]] = {}
    for address, scope in session.execute(query):
        found.setdefault(address, []).append(scope)
    return found


# --- deliveries ----------------------------------------------------------------------


@dataclass(frozen=True)
class Suppression:
    """What the list says about one delivery: suppressed whole, or some recipients removed.

    ``params`` are the parameters to send (``None`` when the whole delivery is
    suppressed); ``removed`` the opted-out addresses with their scopes.
    """

    params: dict[str, Any] | None
    removed: Mapping[str, list[str]]

    @property
    def suppressed(self) -> bool:
        return self.params is None


def lookup_key(value: str, kind: AddressKind) -> str | None:
    """The list's key for a recipient as a rule wrote it; ``None`` when it cannot be one.

    Phone numbers written without ``+`` but with their country code (``919876543210``,
    as Uniphore takes them) are read as international; a national number
    (``0...``) cannot be matched and is not suppressed.
    """
    try:
        return normalise(value, kind)
    except InvalidAddress:
        pass
    if kind == "sms" and value.strip().isdigit():
        try:
            return normalise("+" + value.strip(), kind)
        except InvalidAddress:
            return None
    return None


def _split(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def applies(channel_type: str, category: str) -> bool:
    """Whether the suppression list can apply to a channel of this type and category."""
    spec = SPECS.get(channel_type)
    return spec is not None and spec.recipient is not None and category not in EXEMPT_CATEGORIES


def suppression(
    session: Session,
    *,
    channel_type: str,
    category: str,
    params: Mapping[str, Any],
    event_type: int | None,
) -> Suppression | None:
    """Whether the suppression list stops (part of) a delivery; ``None``: send it as it is."""
    spec = SPECS.get(channel_type)
    if spec is None or spec.recipient is None or not applies(channel_type, category):
        return None
    param, kind = spec.recipient
    value = params.get(param)
    if value is None or value == "":
        return None
    written = _split(value)
    keys = {raw: lookup_key(raw, kind) for raw in written}
    found = matching_scopes(session, sorted({k for k in keys.values() if k}), kind, event_type)
    if not found:
        return None
    kept = [raw for raw in written if keys[raw] not in found]
    if not kept:
        return Suppression(None, found)
    rewritten = dict(params)
    rewritten[param] = kept if isinstance(value, list | tuple) else ", ".join(kept)
    return Suppression(rewritten, found)


# --- the rules test --------------------------------------------------------------------


class DatabaseLookup:
    """``opted_out`` for the rules (:mod:`provider.rules.optout_test`): one bounded query.

    ``lookup(address, kind, timeout)``: whether ``address`` (normalised as ``kind``,
    guessed from ``@`` when ``None``) is opted out of everything or of ``kind``. On
    PostgreSQL the query carries ``statement_timeout``; on SQLite (a local file, one
    indexed lookup) the time taken is checked after it. Past ``timeout`` it raises
    TimeoutError; an address that cannot be normalised is not opted out.
    """

    def __init__(self, database: Database, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = database
        self._clock = clock

    def __call__(self, address: str, kind: str | None, timeout: float | None) -> bool:
        guess: AddressKind = "email" if "@" in address else "sms"
        key = lookup_key(address, "email" if kind == "email" else "sms" if kind == "sms" else guess)
        if key is None:
            return False
        began = self._clock()
        try:
            with self._db.engine.connect() as conn, conn.begin():
                if timeout is not None and self._db.is_postgresql:
                    conn.execute(text(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}"))
                found = conn.execute(
                    select(OptOut.id)
                    .where(OptOut.address == key, or_(OptOut.scope == ALL, OptOut.scope == f"kind:{kind}"))
                    .limit(1)
                ).first()
        except SQLAlchemyError as exc:
            raise storage_error(exc, self._db.url, "opt-out lookup failed") from exc
        if timeout is not None and self._clock() - began > timeout:
            raise TimeoutError("opt-out lookup took longer than the rules' deadline")
        return found is not None
