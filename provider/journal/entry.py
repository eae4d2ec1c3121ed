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

A serving process does not build the entry on the request thread: it hands the journal a
:class:`PendingCall` (the call's raw, finished values, secrets included) and the journal's
writer thread builds the entry with :meth:`PendingCall.build` just before it stores it. The
secrets are then held no longer than until that flush (never stored, never logged).
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import Any, NamedTuple

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
#: the same names as keys of :attr:`~provider.variables.InputVariables.by_folded_name`
_USER_KEYS = tuple(name.lower() for name in _USER_INPUTS)


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a variable called ``name`` holds a secret (its value is never journaled)."""
    return _is_secret_name(name)


_KEEP, _REDACT, _DROP = 0, 1, 2
_MAX_TREATMENTS = 4096
#: name -> what happens to its value (one dictionary look-up per variable; bounded)
_TREATMENTS: dict[str, int] = {}


def _treatment(name: str) -> int:
    """``_DROP`` (a password variable), ``_REDACT`` (a secret-looking name) or ``_KEEP``."""
    treatment = _TREATMENTS.get(name)
    if treatment is None:
        treatment = _DROP if is_secret_variable(name) else _REDACT if _is_secret_name(name) else _KEEP
        if len(_TREATMENTS) >= _MAX_TREATMENTS:
            _TREATMENTS.clear()
        _TREATMENTS[name] = treatment
    return treatment


def kept_variables(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``pairs`` without ``authPW``/``loginPassword`` and with other secret values redacted
    (``pairs`` itself, not a copy, when it is a tuple that holds neither)."""
    kept: list[tuple[str, str]] = []
    whole = True
    for pair in pairs:
        name = pair[0]
        treatment = _TREATMENTS.get(name)
        if treatment is None:
            treatment = _treatment(name)
        if treatment == _KEEP:
            kept.append(pair)
            continue
        whole = False
        if treatment == _REDACT:
            kept.append((name, REDACTED))
    return pairs if whole and isinstance(pairs, tuple) else tuple(kept)


def classify(transport_outcome: str, *, permission_denied: bool, result: CallResult | None) -> str:
    """The journal outcome (see the module docstring) of a call the router classified."""
    if permission_denied:
        return "permission_denied"
    if transport_outcome in ("fault", "error") or result is None:
        return transport_outcome if transport_outcome in ("fault", "error") else "error"
    if not result.success or not _DENIED_OUTPUTS.isdisjoint(result.output.items()):
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
    by_folded_name = request.variables.by_folded_name
    for key in _USER_KEYS:
        item = by_folded_name.get(key)
        if item is not None and (name := item[1].strip()):
            return name[:320]
    return None


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


class PendingCall(NamedTuple):
    """One SOAP call handed to the journal before its entry is built (see the module docstring).

    Holds the call's raw values as the router finished them, secrets included (``request``
    carries ``authPW``): never store, log or print one; build its entry (:meth:`build`) and
    drop it. ``at`` is the wall-clock time (``time.time()``) the call was answered,
    ``elapsed`` its duration in seconds. ``request`` and ``result`` are not changed after
    they were handed over (the router is done with them).
    """

    at: float
    operation: str
    transport_outcome: str
    fault: str | None
    permission_denied: bool
    request: CallRequest | None
    result: CallResult | None
    request_id: str
    client: str | None
    elapsed: float

    def __repr__(self) -> str:  # never the request's secrets in a traceback or a log line
        return f"PendingCall({self.operation!r}, request_id={self.request_id!r})"

    def build(self) -> JournalEntry:
        """The journal entry of this call: :func:`journal_entry` of its values."""
        return journal_entry(
            at=datetime.fromtimestamp(self.at, UTC),
            operation=self.operation,
            transport_outcome=self.transport_outcome,
            fault=self.fault,
            permission_denied=self.permission_denied,
            request=self.request,
            result=self.result,
            request_id=self.request_id,
            client=self.client,
            duration_ms=self.elapsed * 1000,
        )
