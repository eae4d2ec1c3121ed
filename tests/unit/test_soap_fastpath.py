"""The SOAP fast path answers exactly as the Spyne path does: property tests through the real app.

Two real WSGI applications (`ProviderApplication` around a `SoapRouter`), one with the fast
path and one without, answer the same envelope with the same domain result; their answers
are compared as canonical XML (lxml C14N), with the request each domain call received and
the structured ``soap.call`` line saying which path answered. The domain entry is
:class:`Answering`, an in-tree implementation of the router's call function that answers
a given result (the results are what hypothesis varies).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from provider.app import ProviderApplication, build_application
from provider.calls import Provider
from provider.domain import CallRequest, CallResult, CustomFieldData, Operation
from provider.settings import Secret, Settings
from provider.soap.codec import xml_safe
from provider.soap.contract import SOAP11_ENV, SOAP12_ENV
from provider.soap.fastpath import escape_text, plain_namespace
from provider.soap.router import SoapRouter
from provider.variables import OutputVariables
from tests.fixtures.server import AUTH, NAMESPACE, WsgiResult, soap_request, wsgi_call
from tests.support import WEB_SERVICE_PASSWORD

FOREIGN = "urn:example:smartertrack-old"
MAX_BODY = 4 * 1024 * 1024


@dataclass
class Answering:
    """The domain entry of these tests: answers ``result``, keeps the requests it got."""

    result: CallResult = field(default_factory=lambda: CallResult(True))
    requests: list[CallRequest] = field(default_factory=list)

    def __call__(self, request: CallRequest) -> CallResult:
        self.requests.append(request)
        return self.result


@dataclass
class Pair:
    """The same domain behind the fast path and behind Spyne only."""

    domain: Answering
    fast: ProviderApplication
    spyne: ProviderApplication


def _app(domain: Answering, *, fast_path: bool) -> ProviderApplication:
    router = SoapRouter(
        domain,
        namespace=NAMESPACE,
        max_body_bytes=MAX_BODY,
        accept_namespaces=(FOREIGN,),
        fast_path=fast_path,
    )
    return ProviderApplication(router)


@pytest.fixture(scope="module")
def pair() -> Pair:
    domain = Answering()
    return Pair(domain, _app(domain, fast_path=True), _app(domain, fast_path=False))


def c14n(body: bytes) -> bytes:
    return bytes(etree.tostring(etree.fromstring(body), method="c14n"))


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _answer(app: ProviderApplication, body: bytes, headers: dict[str, str]) -> tuple[WsgiResult, bool]:
    """The answer and the ``fast_path`` field of its ``soap.call`` line."""
    handler = _Lines()
    logger = logging.getLogger("provider.app")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        result = wsgi_call(app, body=body, headers=headers)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    (line,) = [r for r in handler.records if getattr(r, "event", None) == "soap.call"]
    return result, bool(getattr(line, "fast_path"))  # noqa: B009 (a structured field of the record)


def both(pair: Pair, body: bytes, headers: dict[str, str]) -> tuple[WsgiResult, WsgiResult, bool]:
    """(fast app's answer, Spyne app's answer, whether the fast path answered), requests compared."""
    pair.domain.requests.clear()
    fast, used_fast = _answer(pair.fast, body, headers)
    spyne, used_spyne = _answer(pair.spyne, body, headers)
    assert not used_spyne
    assert fast.status == spyne.status
    assert fast.header("content-type") == spyne.header("content-type")
    assert c14n(fast.body) == c14n(spyne.body)
    if len(pair.domain.requests) == 2:
        first, second = pair.domain.requests
        assert first.operation == second.operation
        assert first.variables.pairs == second.variables.pairs
    return fast, spyne, used_fast


# --- strategies ------------------------------------------------------------------------------

_SPECIAL = [
    *"&<>\"'\r\n\t =;]\x00\x01\x1f\x7f\u00e9\u20ac\u2028\ufeff\ufffe\uffff\U0001f600",
    "\ud800",
    "]]>",
    "&amp;",
    "<![CDATA[",
]
texts = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.lists(st.sampled_from(_SPECIAL), max_size=12).map("".join),
)
optional_texts = st.one_of(st.none(), texts)
# Output variable names: anything OutputVariables accepts (no "=", not blank).
names = st.one_of(st.text(max_size=12), st.sampled_from(["N\u00e9<&>", "Name"])).filter(
    lambda n: "=" not in n and bool(n.strip())
)
outputs = st.lists(st.tuples(names, texts), max_size=8).map(OutputVariables)
large_lists = st.builds(lambda n, s: [s] * n, st.integers(300, 2000), texts)
option_lists = st.one_of(st.lists(texts, max_size=6), large_lists).map(tuple)
fields = st.builds(
    CustomFieldData,
    name=texts,
    display_with_information_lookup=st.booleans(),
    change_list_options=st.booleans(),
    list_options=option_lists,
    change_required=st.booleans(),
    new_required_value=st.booleans(),
    change_visible=st.booleans(),
    new_visible_value=st.booleans(),
)
results = st.builds(
    CallResult,
    success=st.booleans(),
    message=optional_texts,
    output=outputs,
    custom_fields=st.one_of(st.lists(fields, max_size=4), st.lists(fields, min_size=40, max_size=60)),
    user_info_html=optional_texts,
    permission_denied=st.booleans(),
)
# What a client can put in a string element (XML characters; an empty <string/> is no text).
entry_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30).map(
    xml_safe
)
entries = st.lists(entry_texts.filter(bool), max_size=12)
ordinary = dict(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- properties ------------------------------------------------------------------------------


@settings(**ordinary)
@given(
    result=results,
    operation=st.sampled_from(list(Operation)),
    soap12=st.booleans(),
    namespace=st.sampled_from([NAMESPACE, FOREIGN]),
    inputs=entries,
)
def test_the_fast_path_answers_as_spyne_does(
    pair: Pair, result: CallResult, operation: Operation, soap12: bool, namespace: str, inputs: list[str]
) -> None:
    pair.domain.result = result
    body, headers = soap_request(operation, inputs, soap12=soap12, namespace=namespace)
    fast, _, used_fast = both(pair, body, headers)
    assert fast.status == 200
    assert used_fast
    root = etree.fromstring(fast.body)
    assert root.tag == f"{{{SOAP12_ENV if soap12 else SOAP11_ENV}}}Envelope"
    assert root[0][0].tag == f"{{{namespace}}}{operation.value}Response"


@settings(**ordinary)
@given(inputs=entries, operation=st.sampled_from(list(Operation)), soap12=st.booleans())
def test_the_fast_reader_decodes_inputs_as_spyne_does(
    pair: Pair, inputs: list[str], operation: Operation, soap12: bool
) -> None:
    pair.domain.result = CallResult(True, "ok", OutputVariables([("echo", "1")]))
    body, headers = soap_request(operation, inputs, soap12=soap12)
    _, _, used_fast = both(pair, body, headers)
    assert used_fast
    assert len(pair.domain.requests) == 2


def _envelope(inner: str, *, soap12: bool = False, header: str = "", op_attrs: str = "") -> bytes:
    env = SOAP12_ENV if soap12 else SOAP11_ENV
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<soap:Envelope xmlns:soap="{env}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'{header}<soap:Body><GetCustomFieldOptions xmlns="{NAMESPACE}"{op_attrs}>{inner}'
        "</GetCustomFieldOptions></soap:Body></soap:Envelope>"
    ).encode()


HEADERS = {"Content-Type": "text/xml; charset=utf-8"}
ORDINARY = {
    "no inputs": _envelope(""),
    "empty inputs": _envelope("<inputs/>"),
    "empty list": _envelope("<inputs><InputVariables/></inputs>"),
    "pretty printed": _envelope(
        "\n  <inputs>\n    <InputVariables>\n      <string>a=1</string>\n      <string>b= 2 </string>\n"
        "    </InputVariables>\n  </inputs>\n"
    ),
    "character references and CDATA": _envelope(
        "<inputs><InputVariables><string>a=&#13;&amp;&lt;<![CDATA[<x>]]></string></InputVariables></inputs>"
    ),
}
UNUSUAL = {
    "a SOAP header": _envelope(
        "<inputs><InputVariables><string>a=1</string></InputVariables></inputs>",
        header="<soap:Header><Token xmlns='urn:x'>1</Token></soap:Header>",
    ),
    "a nil entry": _envelope(
        '<inputs><InputVariables><string>a=1</string><string xsi:nil="true"/></InputVariables></inputs>'
    ),
    "a nil inputs": _envelope('<inputs xsi:nil="true"/>'),
    "an empty entry": _envelope(
        "<inputs><InputVariables><string/><string>a=1</string></InputVariables></inputs>"
    ),
    "an unknown element": _envelope(
        "<inputs><InputVariables><string>a=1</string></InputVariables><Extra/></inputs>"
    ),
    "an element in no namespace": _envelope(
        "<inputs><InputVariables><string xmlns=''>a=1</string></InputVariables></inputs>"
    ),
    "an attribute on the operation": _envelope("<inputs/>", op_attrs=' soap:encodingStyle="urn:x"'),
    "text in a container": _envelope("<inputs>stray<InputVariables/></inputs>"),
    "a nested element in an entry": _envelope(
        "<inputs><InputVariables><string>a=<b>1</b></string></InputVariables></inputs>"
    ),
}


@pytest.mark.parametrize("soap12", [False, True], ids=["soap11", "soap12"])
@pytest.mark.parametrize("name", list(ORDINARY))
def test_ordinary_shapes_take_the_fast_path(pair: Pair, name: str, soap12: bool) -> None:
    body = ORDINARY[name]
    if soap12:
        body = body.replace(SOAP11_ENV.encode(), SOAP12_ENV.encode())
    headers = {"Content-Type": "application/soap+xml; charset=utf-8"} if soap12 else HEADERS
    pair.domain.result = CallResult(True, "ok", OutputVariables([("x", "<&>")]))
    fast, _, used_fast = both(pair, body, headers)
    assert fast.status == 200
    assert used_fast


@pytest.mark.parametrize("name", list(UNUSUAL))
def test_unusual_requests_fall_back_to_spyne(pair: Pair, name: str) -> None:
    pair.domain.result = CallResult(True, "ok", OutputVariables([("x", "1")]))
    _, _, used_fast = both(pair, UNUSUAL[name], HEADERS)
    assert not used_fast


def test_other_encodings_fall_back_to_spyne(pair: Pair) -> None:
    text = _envelope("<inputs><InputVariables><string>a=\u00e9</string></InputVariables></inputs>").decode()
    body = text.replace('encoding="utf-8"', 'encoding="utf-16"').encode("utf-16")
    fast, _, used_fast = both(pair, body, {"Content-Type": "text/xml; charset=utf-16"})
    assert fast.status == 200
    assert not used_fast


def test_a_failing_domain_is_the_same_internal_error(pair: Pair) -> None:
    class Broken(Answering):
        def __call__(self, request: CallRequest) -> CallResult:
            raise RuntimeError("a bug in the domain")

    body, headers = soap_request(Operation.START_TICKET, ["a=1"])
    fast = wsgi_call(_app(Broken(), fast_path=True), body=body, headers=headers)
    spyne = wsgi_call(_app(Broken(), fast_path=False), body=body, headers=headers)
    assert fast.status == spyne.status == 500
    assert b"Internal error" in fast.body
    # The request id differs per request; the faults are otherwise the same.
    assert fast.body.split(b"request id")[0] == spyne.body.split(b"request id")[0]


def test_hostile_input_is_refused_before_the_fast_path(pair: Pair) -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]>'
        + _envelope("<inputs><InputVariables><string>a=&e;</string></InputVariables></inputs>").split(
            b"?>", 1
        )[1]
    )
    fast, _, used_fast = both(pair, body, HEADERS)
    assert fast.status == 500
    assert b"DOCTYPE" in fast.body
    assert not used_fast


@given(text=texts)
def test_escaping_round_trips_through_the_parser(text: str) -> None:
    safe = xml_safe(text)
    element = etree.fromstring(f"<a>{escape_text(safe)}</a>".encode())
    assert (element.text or "") == safe


@pytest.mark.parametrize(
    ("namespace", "plain"),
    [
        ("http://tempuri.org/", True),
        ("urn:a&b", False),
        ('urn:"q"', False),
        ("urn:\u00e9", False),
        ("", False),
    ],
)
def test_namespaces_needing_escapes_are_left_to_spyne(namespace: str, plain: bool) -> None:
    assert plain_namespace(namespace) is plain


def test_a_namespace_the_writer_leaves_to_spyne_calls_the_domain_once() -> None:
    odd = "urn:a&b"
    domains = Answering(CallResult(True, "ok", OutputVariables([("x", "1")]))), Answering()
    domains[1].result = domains[0].result
    apps = [
        ProviderApplication(
            SoapRouter(
                d, namespace=NAMESPACE, max_body_bytes=MAX_BODY, accept_namespaces=(odd,), fast_path=fast
            )
        )
        for d, fast in zip(domains, (True, False), strict=True)
    ]
    body, headers = soap_request(Operation.START_CHAT, ["a=1"], namespace=odd)
    (fast, used_fast), (spyne, _) = (_answer(app, body, headers) for app in apps)
    assert fast.status == spyne.status == 200
    assert c14n(fast.body) == c14n(spyne.body)
    assert etree.fromstring(fast.body)[0][0].tag == f"{{{odd}}}StartChatResponse"
    assert not used_fast
    assert [len(d.requests) for d in domains] == [1, 1]


def test_the_setting_turns_the_fast_path_off(tmp_path: Path) -> None:
    def app(value: str) -> ProviderApplication:
        settings = Settings.from_mapping(
            {
                "web_service_password": WEB_SERVICE_PASSWORD,
                "database_url": f"sqlite:///{tmp_path / 'unused.db'}",
                "soap_fast_path": value,
            }
        )
        return build_application(settings, provider=Provider(Secret(WEB_SERVICE_PASSWORD)))

    body, headers = soap_request(Operation.GET_CUSTOM_FIELD_OPTIONS, [AUTH])
    (on, used_on), (off, used_off) = (_answer(app(value), body, headers) for value in ("on", "off"))
    assert used_on and not used_off
    assert on.status == off.status == 200
    assert c14n(on.body) == c14n(off.body)
