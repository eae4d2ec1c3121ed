"""One journal entry from one SOAP call: secrets removed, outcome classified.

:func:`journal_entry` is the one place where a call becomes a
:class:`~provider.domain.JournalEntry`:

* ``authPW`` and ``loginPassword`` are left out entirely (never stored in any form);
* the values of other secret-looking variable names (the names the redaction of
  :mod:`provider.redact` treats as secret: ``*password*``, ``*secret*``,
  ``*token*``, ``*api_key*`` ...) are replaced by ``[redacted]``, in the input and in
  the output variables;
* a caller that did not give the right Web Service Password is not trusted with storage:
  only the names of its first :data:`UNAUTHENTICATED_NAMES` variables are kept (values
  ``[not stored]``, names cut to 100 characters), so a flood of refused requests cannot fill
  the database with its bodies; requests refused before their variables were read (faults)
  keep none;
* the outcome is ``permission_denied`` (wrong or missing Web Service Password),
  ``fault`` (the request was refused before the domain answered it), ``error`` (an
  internal error), ``denied`` (the answer refuses what was asked: ``Success=false``,
  ``Authentication=FAIL``, ``TicketCreation``/``ChatCreation`` ``FALSE``, or a rule
  denied tickets or chats) or ``ok``.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any

from provider.domain import CallRequest, CallResult, CustomFieldData, Identity, JournalEntry
from provider.redact import REDACTED, is_secret_variable
from provider.redact import is_secret_name as _is_secret_name

log = logging.getLogger("provider.journal")

OUTCOMES = ("ok", "denied", "permission_denied", "fault", "error")
NOT_STORED = "[not stored]"
UNAUTHENTICATED_NAMES = 50
_DENIED_OUTPUTS = frozenset(
    {("Authentication", "FAIL"), ("TicketCreation", "FALSE"), ("ChatCreation", "FALSE")}
)
_USER_INPUTS = ("loginUsername", "username", "emailFrom", "email")


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a variable called ``name`` holds a secret (its value is never journaled)."""
    return _is_secret_name(name)


@functools.lru_cache(maxsize=4096)
def _never_stored(name: str) -> bool:
    return is_secret_variable(name)


def kept_variables(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``pairs`` without ``authPW``/``loginPassword`` and with other secret values redacted."""
    return tuple(
        (name, REDACTED if is_secret_name(name) else value)
        for name, value in pairs
        if not _never_stored(name)
    )


def classify(transport_outcome: str, *, permission_denied: bool, result: CallResult | None) -> str:
    """The journal outcome (see the module docstring) of a call the router classified."""
    if permission_denied:
        return "permission_denied"
    if transport_outcome in ("fault", "error") or result is None:
        return transport_outcome if transport_outcome in ("fault", "error") else "error"
    if not result.success or any(pair in _DENIED_OUTPUTS for pair in result.output.items()):
        return "denied"
    decision = result.trace.decision if result.trace is not None else None
    if decision is not None and not (decision.allow and decision.allow_tickets and decision.allow_chats):
        return "denied"
    return "ok"


def identity_document(identity: Identity | None) -> dict[str, Any] | None:
    """The user as the rules saw them, as plain JSON data (``None``: no user)."""
    if identity is None:
        return None
    return {
        "username": identity.username,
        "email": identity.email,
        "display_name": identity.display_name,
        "dn": identity.dn,
        "groups": list(identity.groups),
        "attributes": {str(k): [str(v) for v in values] for k, values in identity.attributes.items()},
    }


def answer_document(result: CallResult) -> dict[str, Any]:
    """What was answered, as plain JSON data: Success, Message, output, fields, HTML, notifications."""
    decision = result.trace.decision if result.trace is not None else None
    return {
        "success": result.success,
        "message": result.message,
        "output": [list(pair) for pair in kept_variables(result.output.items())],
        "fields": [_field(f) for f in result.custom_fields],
        "html": result.user_info_html,
        "notifications": [
            {"rule": n.rule, "channel": n.channel, "params": _json_safe(n.params)}
            for n in (decision.notifications if decision is not None else ())
        ],
    }


def _field(data: CustomFieldData) -> dict[str, Any]:
    return {
        "name": data.name,
        "display_with_information_lookup": data.display_with_information_lookup,
        "change_list_options": data.change_list_options,
        "list_options": list(data.list_options),
        "change_required": data.change_required,
        "new_required_value": data.new_required_value,
        "change_visible": data.change_visible,
        "new_visible_value": data.new_visible_value,
    }


def _json_safe(value: Any) -> Any:
    """``value`` in JSON containers; anything JSON cannot hold becomes its text (a journal
    entry never fails on an odd notification parameter)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _username(request: CallRequest | None, identity: Identity | None) -> str | None:
    if identity is not None:
        return identity.username[:320]
    if request is None:
        return None
    name = next((v.strip() for n in _USER_INPUTS if (v := request.variables.get(n)) and v.strip()), None)
    return name[:320] if name else None


def _variables(request: CallRequest | None, *, permission_denied: bool) -> tuple[tuple[str, str], ...]:
    if request is None:
        return ()
    kept = kept_variables(request.variables.pairs)
    if permission_denied:
        return tuple((name[:100], NOT_STORED) for name, _ in kept[:UNAUTHENTICATED_NAMES])
    return kept


def journal_entry(
    *,
    at: datetime,
    operation: str,
    transport_outcome: str,
    fault: str | None,
    permission_denied: bool,
    request: CallRequest | None,
    result: CallResult | None,
    request_id: str,
    client: str | None,
    duration_ms: float,
) -> JournalEntry:
    """The journal entry of one SOAP call (see the module docstring)."""
    trace = result.trace if result is not None else None
    identity = trace.identity if trace is not None else None
    decision = trace.decision if trace is not None else None
    return JournalEntry(
        at=at,
        operation=operation[:40],
        request_id=request_id,
        client=client[:64] if client else None,
        duration_ms=round(duration_ms, 3),
        outcome=classify(transport_outcome, permission_denied=permission_denied, result=result),
        fault=fault,
        username=_username(request, identity),
        variables=_variables(request, permission_denied=permission_denied),
        identity=identity_document(identity),
        matched=tuple(decision.matched) if decision is not None else (),
        answer=answer_document(result) if result is not None else None,
    )
