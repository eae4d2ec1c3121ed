"""A sign-in code out of its delivery: found by its hash, hidden in reports, scrubbed when spent.

A code's rendered message sits in its delivery's parameters until it is sent. The code
row keeps only the code's hash, so the code is *found* in a text by hashing every run of
code characters of a code length (4, 6, 8) with the row's salt and address
(:func:`codes_in`): exact, whatever the template around it, and nothing else is touched
(a code is found as it was made: digits, upper-case letters).

- The event of a code's delivery carries the code row's id in its fingerprint
  (:func:`event_fingerprint`, ``signin-code:ID:random``), which links the two.
- :func:`scrub_codes` replaces the code by ``[redacted]`` in the delivery's parameters,
  its last error and its attempts' errors: called when the code is redeemed, when a newer
  code replaces it (:mod:`provider.comms.signin_codes`) and when it expires
  (:func:`purge_expired`, run by the retention purge).
- :func:`hide_params` and :func:`hide_text` are what the reports
  (:mod:`provider.events.reports`, so the CLI and the console) show of a sign-in code
  delivery: every parameter but the recipient hidden, the code out of error texts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from provider.db.events import PENDING, SENDING, DeliveryAttempt, DeliveryRecord, EventRecord
from provider.db.session import Database
from provider.db.signin import SignInCode
from provider.redact import REDACTED, replace_values

FINGERPRINT_PREFIX = "signin-code:"
CODE_LENGTHS = (4, 6, 8)
CODE_CHARACTERS = frozenset(string.digits + string.ascii_uppercase)
#: texts longer than this are searched only in their first part (a message is far shorter)
MAX_SEARCH_CHARS = 200_000
PURGE_BATCH = 500


def code_hash(salt: bytes, address: str, code: str) -> str:
    """HMAC-SHA256 (keyed by ``salt``) of the address and the code, as hex (what a code row keeps)."""
    message = address.encode("utf-8") + b"\x00" + code.encode("utf-8")
    return hmac.new(salt, message, hashlib.sha256).hexdigest()


def event_fingerprint(code_id: int) -> str:
    """The fingerprint of the event whose delivery carries code ``code_id`` (unique: random part)."""
    return f"{FINGERPRINT_PREFIX}{code_id}:{secrets.token_hex(16)}"


def code_id_of(fingerprint: str | None) -> int | None:
    """The code row id an event fingerprint names, ``None`` for any other event."""
    if not fingerprint or not fingerprint.startswith(FINGERPRINT_PREFIX):
        return None
    number = fingerprint[len(FINGERPRINT_PREFIX) :].split(":", 1)[0]
    return int(number) if number.isdigit() else None


def codes_in(texts: Iterable[str], row: SignInCode) -> set[str]:
    """The occurrences of ``row``'s code in ``texts`` (at most one distinct value)."""
    salt = bytes.fromhex(row.salt)
    found: set[str] = set()
    for text in texts:
        searched = text[:MAX_SEARCH_CHARS]
        for length in CODE_LENGTHS:
            for start in range(0, len(searched) - length + 1):
                window = searched[start : start + length]
                if all(c in CODE_CHARACTERS for c in window) and _is_code(salt, row, window):
                    found.add(window)
        if found:
            return found
    return found


def _is_code(salt: bytes, row: SignInCode, candidate: str) -> bool:
    return secrets.compare_digest(code_hash(salt, row.address, candidate), row.code_hash)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


def _without(value: Any, codes: set[str]) -> Any:
    if isinstance(value, str):
        return replace_values(value, codes)
    if isinstance(value, Mapping):
        return {key: _without(item, codes) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without(item, codes) for item in value]
    return value


def scrub_codes(session: Session, rows: Sequence[SignInCode], *, sent_only: bool = False) -> int:
    """Replace each row's code in its deliveries (parameters, errors); how many deliveries changed.

    With ``sent_only`` a delivery still waiting to be sent (pending, sending) is left whole: a
    replaced code no longer signs in, so its message may still go out as written (a customer
    never gets "your code is [redacted]"), and the expiry purge scrubs it later.
    """
    changed = 0
    for row in rows:
        pattern = f"{FINGERPRINT_PREFIX}{row.id}:%"
        query = (
            sa.select(DeliveryRecord)
            .join(EventRecord, EventRecord.id == DeliveryRecord.event_id)
            .where(EventRecord.fingerprint.like(pattern))
        )
        if sent_only:
            query = query.where(DeliveryRecord.status.not_in((PENDING, SENDING)))
        deliveries = session.scalars(query).all()
        for delivery in deliveries:
            attempts = session.scalars(
                sa.select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery.id)
            ).all()
            texts = [*_strings(delivery.params), delivery.last_error or ""]
            codes = codes_in([*texts, *(a.error or "" for a in attempts)], row)
            if not codes:
                continue
            delivery.params = _without(dict(delivery.params), codes)
            delivery.last_error = _without(delivery.last_error, codes)
            for attempt in attempts:
                attempt.error = _without(attempt.error, codes)
            changed += 1
    session.flush()
    return changed


def purge_expired(database: Database, now: datetime, *, batch: int = PURGE_BATCH) -> int:
    """Scrub the deliveries of codes expired by ``now`` and remove those codes; how many.

    An expired code can no longer sign in, so its row is not needed (the request limits
    count :class:`~provider.db.signin.SignInRequest` rows, not codes). One batch.
    """
    with database.session(immediate=True) as session:
        rows = session.scalars(
            sa.select(SignInCode).where(SignInCode.expires_at <= now).order_by(SignInCode.id).limit(batch)
        ).all()
        if not rows:
            return 0
        scrub_codes(session, rows)
        ids = [r.id for r in rows]
        session.execute(
            sa.delete(SignInCode).where(SignInCode.id.in_(ids)).execution_options(synchronize_session=False)
        )
        return len(ids)


def hide_params(params: Mapping[str, Any], recipient: str | None) -> dict[str, Any]:
    """A sign-in code delivery's parameters as shown: the recipient's value, the rest hidden."""
    return {key: value if recipient and value == recipient else REDACTED for key, value in params.items()}


def hide_text(
    session: Session, fingerprint: str | None, params: Mapping[str, Any], text: str | None
) -> str | None:
    """``text`` (an error of a sign-in code delivery) without the code its parameters carry."""
    code_id = code_id_of(fingerprint)
    if text is None or code_id is None:
        return text
    row = session.get(SignInCode, code_id)
    if row is None:
        return text
    codes = codes_in([*_strings(params), text], row)
    return replace_values(text, codes) if codes else text
