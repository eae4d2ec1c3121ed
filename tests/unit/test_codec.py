"""The codec: Spyne objects <-> CallRequest/CallResult, and round trips through real Spyne serialisation.

``encode_inputs`` and ``decode_result`` are the client side of the codec, for these tests only.

The property tests send arbitrary unicode (every character XML 1.0 can carry) through
the whole stack in-process: an lxml-built request envelope, the router, Spyne's
deserialiser, the codec, an echoing domain function, the codec again, Spyne's
serialiser, and an independent lxml reader of the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider.app import ProviderApplication
from provider.domain import CallRequest, CallResult, CustomFieldData, Operation
from provider.soap import codec
from provider.soap.client import parse_answer
from provider.soap.contract import OPERATIONS, ContractTypes, OperationSpec, build_types
from provider.soap.router import SoapRouter
from provider.variables import InputVariables, OutputVariables, split_entry
from tests.fixtures.server import soap_request, wsgi_call

SPECS = {spec.operation: spec for spec in OPERATIONS}
TYPES = build_types("http://tempuri.org/")
ILLEGAL = [chr(i) for i in range(32) if chr(i) not in "\t\n\r"] + ["\ufffe", "\uffff"]
XML_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters=ILLEGAL)
XML_TEXT = st.text(XML_CHAR, max_size=40)
NAME = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters=[*ILLEGAL, "="]), min_size=1, max_size=15
).filter(lambda n: n.strip() != "")
LEGAL = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def encode_inputs(spec: OperationSpec, entries: Iterable[str], types: ContractTypes) -> Any:
    """An ``*Inputs`` object carrying ``entries`` (the client side of ``codec.decode_request``)."""
    return types[spec.inputs](InputVariables=[codec.xml_safe(e) for e in entries])


def decode_result(result: Any) -> CallResult:
    """A :class:`CallResult` from a deserialised ``*Result`` object (the client side).

    Output entries without ``=`` are dropped, as SmarterTrack drops them.
    """
    output = OutputVariables()
    for entry in getattr(result, "OutputVariables", None) or ():
        split = split_entry(entry) if entry is not None else None
        if split is not None and split[0].strip():
            output.set(*split)
    fields = [
        CustomFieldData(
            name=item.CustomFieldName or "",
            display_with_information_lookup=bool(item.DisplayWithInformationLookup),
            change_list_options=bool(item.ChangeListOptions),
            list_options=tuple(o for o in (item.ListOptions or ()) if o is not None),
            change_required=bool(item.ChangeRequired),
            new_required_value=bool(item.NewRequiredValue),
            change_visible=bool(item.ChangeVisible),
            new_visible_value=bool(item.NewVisibleValue),
        )
        for item in (getattr(result, "CustomFieldDataItems", None) or ())
        if item is not None
    ]
    return CallResult(
        success=bool(result.Success),
        message=result.Message,
        output=output,
        custom_fields=fields,
        user_info_html=getattr(result, "UserInfoHtml", None),
    )


class Echo:
    """The domain entry for these tests: answers with what it was sent, and keeps the request."""

    def __init__(self) -> None:
        self.requests: list[CallRequest] = []
        self.result: CallResult | None = None

    def __call__(self, request: CallRequest) -> CallResult:
        self.requests.append(request)
        if self.result is not None:
            return self.result
        return CallResult(success=True, message="echo", output=OutputVariables(request.variables.pairs))


ECHO = Echo()
APP = ProviderApplication(SoapRouter(ECHO, namespace="http://tempuri.org/", max_body_bytes=1_048_576))


def round_trip(op: Operation, entries: list[str], *, soap12: bool = False) -> tuple[CallRequest, object]:
    body, headers = soap_request(op, entries, soap12=soap12)
    result = wsgi_call(APP, body=body, headers=headers)
    assert result.status == 200, result.body
    return ECHO.requests[-1], parse_answer(result.body, op)


# --- properties through Spyne ------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(XML_TEXT, max_size=12), soap12=st.booleans())
def test_any_input_list_reaches_the_domain_exactly(entries: list[str], soap12: bool) -> None:
    request, _ = round_trip(Operation.START_TICKET, entries, soap12=soap12)
    assert request.variables.pairs == InputVariables.parse(entries).pairs
    assert request.operation is Operation.START_TICKET


@settings(max_examples=150, deadline=None)
@given(
    pairs=st.dictionaries(NAME, XML_TEXT, max_size=10).map(
        lambda d: list({k.strip().lower(): (k.strip(), v) for k, v in d.items()}.values())
    ),
    soap12=st.booleans(),
)
def test_any_variables_round_trip_in_and_out(pairs: list[tuple[str, str]], soap12: bool) -> None:
    entries = [f"{name}={value}" for name, value in pairs]
    request, answer = round_trip(Operation.START_CHAT, entries, soap12=soap12)
    assert list(request.variables.pairs) == pairs
    assert answer.output_variables == entries  # type: ignore[attr-defined]


FIELD = st.builds(
    CustomFieldData,
    name=XML_TEXT,
    display_with_information_lookup=st.booleans(),
    change_list_options=st.booleans(),
    list_options=st.lists(XML_TEXT, max_size=4).map(tuple),
    change_required=st.booleans(),
    new_required_value=st.booleans(),
    change_visible=st.booleans(),
    new_visible_value=st.booleans(),
)


@settings(max_examples=100, deadline=None)
@given(
    success=st.booleans(),
    message=st.none() | XML_TEXT,
    html=st.none() | XML_TEXT,
    fields=st.lists(FIELD, max_size=3),
    outputs=st.dictionaries(NAME.map(str.strip), XML_TEXT, max_size=5),
)
def test_any_result_round_trips_through_spyne(
    success: bool,
    message: str | None,
    html: str | None,
    fields: list[CustomFieldData],
    outputs: dict[str, str],
) -> None:
    output = OutputVariables(outputs.items())
    ECHO.result = CallResult(
        success=success, message=message, output=output, custom_fields=fields, user_info_html=html
    )
    try:
        _, cf = round_trip(Operation.GET_CUSTOM_FIELD_OPTIONS, ["authPW=x"])
        _, info = round_trip(Operation.GET_USER_DETAILS, ["authPW=x"])
    finally:
        ECHO.result = None
    assert (cf.success, cf.message, cf.output_variables) == (success, message, output.to_list())  # type: ignore[attr-defined]
    assert info.user_info_html == html  # type: ignore[attr-defined]
    decoded = [
        CustomFieldData(
            name=str(item["CustomFieldName"]),
            display_with_information_lookup=item["DisplayWithInformationLookup"] == "true",
            change_list_options=item["ChangeListOptions"] == "true",
            list_options=tuple(item["ListOptions"]),  # type: ignore[arg-type]
            change_required=item["ChangeRequired"] == "true",
            new_required_value=item["NewRequiredValue"] == "true",
            change_visible=item["ChangeVisible"] == "true",
            new_visible_value=item["NewVisibleValue"] == "true",
        )
        for item in cf.custom_fields  # type: ignore[attr-defined]
    ]
    assert decoded == fields


@given(st.text(max_size=60))
def test_xml_safe_keeps_exactly_the_legal_characters(text: str) -> None:
    cleaned = codec.xml_safe(text)
    assert cleaned == "".join(LEGAL.findall(text))
    if cleaned == text:
        assert codec.xml_safe(text) is text


# --- the codec functions ----------------------------------------------------------------------


def test_absent_inputs_decode_to_no_variables() -> None:
    inputs_cls = TYPES["ExternalTicketProviderInputs"]
    for inputs in (
        None,
        inputs_cls(),
        inputs_cls(InputVariables=None),
        inputs_cls(InputVariables=[None, "", "x"]),
    ):
        request = codec.decode_request(
            Operation.START_TICKET, inputs, client_address="10.0.0.1", request_id="r1"
        )
        assert len(request.variables) == 0
        assert (request.client_address, request.request_id) == ("10.0.0.1", "r1")


def test_entries_split_on_the_first_equals_and_keep_everything_else() -> None:
    inputs = encode_inputs(
        SPECS[Operation.AUTHENTICATE],
        ["authPW=a=b=c", " loginUsername = Zoë ", "loginPassword=<&>\"' \t"],
        TYPES,
    )
    variables = codec.decode_request(Operation.AUTHENTICATE, inputs).variables
    assert variables["AuthPW"] == "a=b=c"
    assert variables["LOGINUSERNAME"] == " Zoë "
    assert variables["loginpassword"] == "<&>\"' \t"


def test_encode_result_fills_only_the_members_of_the_result_type() -> None:
    result = CallResult(
        success=True,
        message="m",
        output=OutputVariables([("A", "1")]),
        custom_fields=[CustomFieldData(name="F")],
        user_info_html="<b/>",
    )
    ticket = codec.encode_result(SPECS[Operation.START_TICKET], result, TYPES)
    assert list(type(ticket)._type_info) == ["Success", "Message", "OutputVariables"]
    assert (ticket.Success, ticket.Message, ticket.OutputVariables) == (True, "m", ["A=1"])
    event = codec.encode_result(SPECS[Operation.NOTIFY_EVENT_FIRED], result, TYPES)
    assert list(type(event)._type_info) == ["Success", "Message"]
    info = codec.encode_result(SPECS[Operation.GET_USER_DETAILS], result, TYPES)
    assert info.UserInfoHtml == "<b/>"
    fields = codec.encode_result(SPECS[Operation.GET_CUSTOM_FIELD_OPTIONS], result, TYPES)
    assert [f.CustomFieldName for f in fields.CustomFieldDataItems] == ["F"]
    assert decode_result(fields) == CallResult(
        success=True,
        message="m",
        output=OutputVariables([("A", "1")]),
        custom_fields=[CustomFieldData(name="F")],
    )


def test_empty_lists_are_lists_and_none_strings_stay_none() -> None:
    result = codec.encode_result(SPECS[Operation.GET_CUSTOM_FIELD_OPTIONS], CallResult(success=False), TYPES)
    assert (result.Success, result.Message, result.OutputVariables, result.CustomFieldDataItems) == (
        False,
        None,
        [],
        [],
    )
