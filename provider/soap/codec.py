"""Spyne contract objects <-> the domain's :class:`CallRequest` and :class:`CallResult`.

The ``variable=value`` format itself lives in :mod:`provider.variables`; this module
only moves lists in and out of the Spyne ``*Inputs`` / ``*Result`` objects of one
namespace (:class:`~provider.soap.contract.ContractTypes`):

* an absent ``inputs`` or ``InputVariables`` (and ``xsi:nil`` entries) is an empty
  list, never an error;
* outgoing strings lose the characters XML 1.0 cannot carry (C0 controls other than
  tab, newline and carriage return, lone surrogates, U+FFFE and U+FFFF); everything
  else, ``=`` and XML-special characters included, goes out exactly;
* value types always go out (booleans ``true``/``false``), a ``None`` string is
  omitted, and the lists SmarterTrack iterates (``OutputVariables``,
  ``CustomFieldDataItems``, ``ListOptions``) are always present, empty if need be.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from provider.domain import CallRequest, CallResult, CustomFieldData, Operation
from provider.soap.contract import TYPES, ContractTypes, OperationSpec
from provider.variables import InputVariables

# Everything outside XML 1.0's Char production.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MEMBERS = {name: frozenset(m.name for m in members) for name, members in TYPES.items()}


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot represent (even escaped)."""
    if _NOT_XML_CHAR.search(text) is None:
        return text
    return _NOT_XML_CHAR.sub("", text)


def _optional(text: str | None) -> str | None:
    return None if text is None else xml_safe(text)


def input_entries(inputs: Any) -> list[str | None]:
    """The raw ``InputVariables`` strings of an ``*Inputs`` object (``None`` -> ``[]``)."""
    if inputs is None:
        return []
    entries: Iterable[str | None] | None = getattr(inputs, "InputVariables", None)
    return list(entries) if entries else []


def decode_request(
    operation: Operation, inputs: Any, *, client_address: str | None = None, request_id: str = ""
) -> CallRequest:
    """The domain request for one decoded SOAP call."""
    return CallRequest(
        operation=operation,
        variables=InputVariables.parse(input_entries(inputs)),
        client_address=client_address,
        request_id=request_id,
    )


def result_values(spec: OperationSpec, result: CallResult) -> dict[str, Any]:
    """The member values of the ``<Op>Result`` for ``result``, ready to write.

    Plain values (``bool``, ``str``, ``None``, lists, one ``dict`` per custom field in
    contract member order): the one place the outgoing values are prepared, used by the
    Spyne path (:func:`encode_result`) and the fast path (:mod:`provider.soap.fastpath`)
    alike. Members the result type lacks are left out.
    """
    members = _MEMBERS[spec.result]
    values: dict[str, Any] = {"Success": bool(result.success), "Message": _optional(result.message)}
    if "OutputVariables" in members:
        values["OutputVariables"] = [xml_safe(entry) for entry in result.output.to_list()]
    if "CustomFieldDataItems" in members:
        values["CustomFieldDataItems"] = [field_values(f) for f in result.custom_fields]
    if "UserInfoHtml" in members:
        values["UserInfoHtml"] = _optional(result.user_info_html)
    return values


def field_values(data: CustomFieldData) -> dict[str, Any]:
    """The member values of one ``ExternalCustomFieldData``, in contract order."""
    return {
        "CustomFieldName": xml_safe(data.name),
        "DisplayWithInformationLookup": bool(data.display_with_information_lookup),
        "ChangeListOptions": bool(data.change_list_options),
        "ListOptions": [xml_safe(option) for option in data.list_options],
        "ChangeRequired": bool(data.change_required),
        "NewRequiredValue": bool(data.new_required_value),
        "ChangeVisible": bool(data.change_visible),
        "NewVisibleValue": bool(data.new_visible_value),
    }


def encode_result(spec: OperationSpec, result: CallResult, types: ContractTypes) -> Any:
    """The ``<Op>Result`` Spyne object for ``result``; members the result type lacks are ignored."""
    values = result_values(spec, result)
    if "CustomFieldDataItems" in values:
        values["CustomFieldDataItems"] = [types.field_data(**f) for f in values["CustomFieldDataItems"]]
    return types[spec.result](**values)
