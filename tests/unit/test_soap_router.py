"""The SOAP endpoint in-process: every operation, both SOAP versions, faults, logging, metrics.

The WSGI application is the real one (`provider.app.build_application`) around a real
`Provider` with in-tree plug-ins; requests go through Spyne exactly as under gunicorn.
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import pytest
from lxml import etree
from spyne.model.complex import ComplexModelBase
from spyne.util import appreg

from provider.app import ProviderApplication, build_application
from provider.calls import PERMISSION_DENIED, Provider
from provider.domain import CallResult, CustomFieldData, Decision, Identity, Operation
from provider.logging import quiet_spyne
from provider.settings import Secret, Settings
from provider.soap.client import SoapFault, parse_answer
from provider.soap.contract import SOAP11_ENV, SOAP12_ENV
from provider.soap.router import SoapRouter
from provider.variables import InputVariables
from tests.fixtures.server import AUTH, NAMESPACE, WsgiResult, soap_request, wsgi_call
from tests.plugins import FixedRules
from tests.support import WEB_SERVICE_PASSWORD


def make_app(tmp_path: Path, provider: Provider | None = None, **values: object) -> ProviderApplication:
    settings = Settings.from_mapping(
        {
            "web_service_password": WEB_SERVICE_PASSWORD,
            "database_url": f"sqlite:///{tmp_path / 'unused.db'}",
            **values,
        }
    )
    return build_application(settings, provider=provider or Provider(Secret(WEB_SERVICE_PASSWORD)))


@pytest.fixture
def app(tmp_path: Path) -> ProviderApplication:
    return make_app(tmp_path)


def call(app: ProviderApplication, op: Operation, entries: list[str], *, soap12: bool = False) -> WsgiResult:
    body, headers = soap_request(op, entries, soap12=soap12)
    return wsgi_call(app, body=body, headers=headers)


NEUTRAL = {
    Operation.AUTHENTICATE: (True, "Login Failure", ["Authentication=FAIL"]),
    Operation.GET_SIGN_IN_COOKIE_INFO: (True, "Login Failure", ["Authentication=FAIL"]),
    Operation.GET_CUSTOM_FIELD_OPTIONS: (True, "Result okay", ["CanStartTickets=True", "CanStartChats=True"]),
    Operation.START_TICKET: (True, "Ticket Creation Successful", ["TicketCreation=TRUE"]),
    Operation.START_CHAT: (True, "Chat Creation Successful", ["ChatCreation=TRUE"]),
    Operation.GET_USER_DETAILS: (True, "User Account Information Retrieved Successfully", []),
    Operation.NOTIFY_EVENT_FIRED: (True, "Event Notification Successful", []),
}
INPUTS = [AUTH, "loginUsername=alice", "loginPassword=secret", "eventType=502000", "args_Ticket=1"]


@pytest.mark.parametrize("soap12", [False, True], ids=["soap11", "soap12"])
@pytest.mark.parametrize("op", list(Operation))
def test_every_operation_answers_its_neutral_result(
    app: ProviderApplication, op: Operation, soap12: bool
) -> None:
    result = call(app, op, INPUTS, soap12=soap12)
    assert result.status == 200
    expected_type = "application/soap+xml" if soap12 else "text/xml"
    assert result.header("content-type") == f"{expected_type}; charset=utf-8"
    root = etree.fromstring(result.body)
    assert root.tag == f"{{{SOAP12_ENV if soap12 else SOAP11_ENV}}}Envelope"
    response = root[0][0]
    assert response.tag == f"{{{NAMESPACE}}}{op.value}Response"
    assert response[0].tag == f"{{{NAMESPACE}}}{op.value}Result"
    answer = parse_answer(result.body, op)
    success, message, outputs = NEUTRAL[op]
    assert (answer.success, answer.message, answer.output_variables) == (success, message, outputs)


def test_result_members_are_in_xmlserializer_order_with_lowercase_booleans(tmp_path: Path) -> None:
    fields = [
        CustomFieldData(
            name="Plan", change_list_options=True, list_options=("Gold", "Silver"), change_visible=True
        )
    ]
    rules = FixedRules({Operation.GET_CUSTOM_FIELD_OPTIONS: Decision(fields=fields)})
    app = make_app(tmp_path, Provider(Secret(WEB_SERVICE_PASSWORD), rules=rules))
    result = call(app, Operation.GET_CUSTOM_FIELD_OPTIONS, [AUTH])
    root = etree.fromstring(result.body)
    (res,) = root.iter(f"{{{NAMESPACE}}}GetCustomFieldOptionsResult")
    assert [etree.QName(c).localname for c in res] == [
        "Success",
        "Message",
        "CustomFieldDataItems",
        "OutputVariables",
    ]
    (item,) = res.find(f"{{{NAMESPACE}}}CustomFieldDataItems")
    assert etree.QName(item).localname == "ExternalCustomFieldData"
    assert [
        (etree.QName(c).localname, c.text) for c in item if etree.QName(c).localname != "ListOptions"
    ] == [
        ("CustomFieldName", "Plan"),
        ("DisplayWithInformationLookup", "false"),
        ("ChangeListOptions", "true"),
        ("ChangeRequired", "false"),
        ("NewRequiredValue", "false"),
        ("ChangeVisible", "true"),
        ("NewVisibleValue", "false"),
    ]
    options = item.find(f"{{{NAMESPACE}}}ListOptions")
    assert [c.text for c in options] == ["Gold", "Silver"]
    assert [etree.QName(c).localname for c in options] == ["string", "string"]
    assert b"xsi:nil" not in result.body
    booleans = [e.text for e in root.iter() if etree.QName(e).localname in {"Success", "ChangeVisible"}]
    assert booleans == ["true", "true"]


def test_null_strings_are_omitted_and_lists_always_present(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    result = call(app, Operation.GET_USER_DETAILS, [AUTH])
    (res,) = etree.fromstring(result.body).iter(f"{{{NAMESPACE}}}GetUserDetailsResult")
    # UserInfoHtml is None: omitted (not xsi:nil); OutputVariables empty but present.
    assert [etree.QName(c).localname for c in res] == ["Success", "Message", "OutputVariables"]
    assert len(res.find(f"{{{NAMESPACE}}}OutputVariables")) == 0


def test_user_info_html_and_event_result(tmp_path: Path) -> None:
    html = '<b>Account</b> & "plan" <br/>'
    rules = FixedRules({Operation.GET_USER_DETAILS: Decision(html=html)})
    app = make_app(tmp_path, Provider(Secret(WEB_SERVICE_PASSWORD), rules=rules))
    assert (
        parse_answer(
            call(app, Operation.GET_USER_DETAILS, [AUTH]).body, Operation.GET_USER_DETAILS
        ).user_info_html
        == html
    )
    result = call(app, Operation.NOTIFY_EVENT_FIRED, [AUTH, "eventType=502000"])
    (res,) = etree.fromstring(result.body).iter(f"{{{NAMESPACE}}}NotifyEventFiredResult")
    assert [etree.QName(c).localname for c in res] == ["Success", "Message"]


@pytest.mark.parametrize(
    "entries", [[], ["authPW=wrong"], ["AUTHPW= " + WEB_SERVICE_PASSWORD]], ids=["missing", "wrong", "padded"]
)
@pytest.mark.parametrize("soap12", [False, True], ids=["soap11", "soap12"])
def test_permission_denied_is_logged_without_the_password(
    app: ProviderApplication, entries: list[str], soap12: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    result = call(app, Operation.START_TICKET, [*entries, "loginUsername=bob"], soap12=soap12)
    assert result.status == 200
    answer = parse_answer(result.body, Operation.START_TICKET)
    assert (answer.success, answer.message, answer.output_variables) == (False, PERMISSION_DENIED, [])
    denied = [r for r in caplog.records if getattr(r, "event", None) == "security.permission_denied"]
    assert len(denied) == 1
    assert denied[0].request_id == result.header("x-request-id")
    assert denied[0].client == "192.0.2.10"
    assert denied[0].password_supplied is bool(entries)
    calls = [r for r in caplog.records if getattr(r, "event", None) == "soap.call"]
    assert [(r.operation, r.outcome) for r in calls] == [("StartTicket", "failure")]
    for record in caplog.records:
        text = json.dumps(vars(record), default=str)
        assert "wrong" not in text and WEB_SERVICE_PASSWORD not in text


def test_password_is_case_insensitive_by_name(app: ProviderApplication) -> None:
    answer = parse_answer(
        call(app, Operation.START_CHAT, [f"AuthPW={WEB_SERVICE_PASSWORD}"]).body, Operation.START_CHAT
    )
    assert answer.success is True


def test_one_structured_log_line_per_call(app: ProviderApplication, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    first = call(app, Operation.START_CHAT, [AUTH])
    second = call(app, Operation.GET_CUSTOM_FIELD_OPTIONS, [AUTH], soap12=True)
    records = [r for r in caplog.records if getattr(r, "event", None) == "soap.call"]
    assert len(records) == 2
    assert [(r.operation, r.outcome, r.soap_version, r.status) for r in records] == [
        ("StartChat", "success", "1.1", 200),
        ("GetCustomFieldOptions", "success", "1.2", 200),
    ]
    ids = [first.header("x-request-id"), second.header("x-request-id")]
    assert [r.request_id for r in records] == ids
    assert all(len(i or "") == 32 and int(i or "", 16) >= 0 for i in ids) and ids[0] != ids[1]
    assert all(isinstance(r.duration_ms, float) and r.duration_ms > 0 for r in records)
    assert all(r.client == "192.0.2.10" for r in records)


class ExplodingRules:
    """A rule evaluator with a bug: raises for every call."""

    def evaluate(
        self, operation: Operation, variables: InputVariables, identity: Identity | None
    ) -> Decision:
        raise RuntimeError("boom at /srv/secret/path.py")


@pytest.mark.parametrize("soap12", [False, True], ids=["soap11", "soap12"])
def test_unexpected_exception_is_an_internal_error_fault_with_the_request_id(
    tmp_path: Path, soap12: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = make_app(tmp_path, Provider(Secret(WEB_SERVICE_PASSWORD), rules=ExplodingRules()))
    result = call(app, Operation.START_TICKET, [AUTH], soap12=soap12)
    request_id = result.header("x-request-id")
    assert result.status == 500
    with pytest.raises(SoapFault) as fault:
        parse_answer(result.body, Operation.START_TICKET, status=result.status)
    assert fault.value.code == ("soap:Receiver" if soap12 else "soap:Server")
    assert fault.value.message == f"Internal error (request id {request_id})"
    assert b"boom" not in result.body and b"Traceback" not in result.body and b"/srv" not in result.body
    errors = [r for r in caplog.records if getattr(r, "event", None) == "soap.internal_error"]
    assert len(errors) == 1 and errors[0].exc_info is not None and errors[0].request_id == request_id
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "soap.call"]
    assert (record.outcome, record.fault, record.status) == ("error", "internal", 500)
    # The worker keeps answering.
    assert call(app, Operation.GET_USER_DETAILS, ["authPW=wrong"]).status == 200


def test_characters_xml_cannot_carry_are_stripped_from_outgoing_values(tmp_path: Path) -> None:
    decision = Decision(
        message="ok\x00\x1b done\ufffe",
        variables=[("cf_Note", "a\x01b\x7f\ud800c\tline\nnext")],
        fields=[CustomFieldData(name="F\x0b", list_options=("x\x0c", "\U0001f600"))],
    )
    rules = FixedRules({Operation.GET_CUSTOM_FIELD_OPTIONS: decision})
    app = make_app(tmp_path, Provider(Secret(WEB_SERVICE_PASSWORD), rules=rules))
    result = call(app, Operation.GET_CUSTOM_FIELD_OPTIONS, [AUTH])
    assert result.status == 200
    answer = parse_answer(result.body, Operation.GET_CUSTOM_FIELD_OPTIONS)
    assert answer.message == "ok done"
    assert answer.outputs["cf_Note"] == "ab\x7fc\tline\nnext"
    assert answer.custom_fields[0]["CustomFieldName"] == "F"
    assert answer.custom_fields[0]["ListOptions"] == ["x", "\U0001f600"]


def test_absent_inputs_and_absent_input_variables_are_an_empty_list(app: ProviderApplication) -> None:
    for inner in (
        "",
        "<inputs/>",
        "<inputs><InputVariables/></inputs>",
        '<inputs><InputVariables><string xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"/></InputVariables></inputs>',
    ):
        body = (
            f'<soap:Envelope xmlns:soap="{SOAP11_ENV}"><soap:Body>'
            f'<StartTicket xmlns="{NAMESPACE}">{inner}</StartTicket></soap:Body></soap:Envelope>'
        ).encode()
        result = wsgi_call(app, body=body, headers={"Content-Type": "text/xml; charset=utf-8"})
        assert result.status == 200, inner
        answer = parse_answer(result.body, Operation.START_TICKET)
        assert (answer.success, answer.message) == (False, PERMISSION_DENIED)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"http://tempuri.org/StartChat"'},
        {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "http://tempuri.org/StartChat"},
        {"Content-Type": "text/xml"},
        {"Content-Type": "TEXT/XML; Charset=UTF-8"},
    ],
    ids=["quoted-action", "bare-action", "no-action", "upper-case"],
)
def test_soap11_content_type_and_action_variants(app: ProviderApplication, headers: dict[str, str]) -> None:
    body, _ = soap_request(Operation.START_CHAT, [AUTH])
    result = wsgi_call(app, body=body, headers=headers)
    assert result.status == 200
    assert parse_answer(result.body, Operation.START_CHAT).success is True


def test_soap12_with_action_parameter(app: ProviderApplication) -> None:
    body, _ = soap_request(Operation.START_CHAT, [AUTH], soap12=True)
    headers = {"Content-Type": 'application/soap+xml;charset=utf-8;action="http://tempuri.org/StartChat"'}
    result = wsgi_call(app, body=body, headers=headers)
    assert result.status == 200 and result.header("content-type") == "application/soap+xml; charset=utf-8"


def test_utf16_body_with_its_charset(app: ProviderApplication) -> None:
    body, _ = soap_request(Operation.START_CHAT, [AUTH, "name=Zoë ✓"])
    utf16 = body.decode("utf-8").replace("utf-8", "utf-16").encode("utf-16")
    result = wsgi_call(app, body=utf16, headers={"Content-Type": "text/xml; charset=utf-16"})
    assert result.status == 200
    assert parse_answer(result.body, Operation.START_CHAT).success is True


def test_comments_and_processing_instructions_in_the_body_are_ignored(app: ProviderApplication) -> None:
    body = (
        f'<?xml version="1.0"?><!-- hi --><soap:Envelope xmlns:soap="{SOAP11_ENV}"><soap:Body><!-- c --><?pi x?>'
        f'<StartChat xmlns="{NAMESPACE}"><inputs><InputVariables><string>{AUTH}</string>'
        "</InputVariables></inputs></StartChat></soap:Body></soap:Envelope>"
    ).encode()
    result = wsgi_call(app, body=body, headers={"Content-Type": "text/xml"})
    assert result.status == 200 and parse_answer(result.body, Operation.START_CHAT).success is True


# --- namespace tolerance ---------------------------------------------------------------


@pytest.mark.parametrize("soap12", [False, True], ids=["soap11", "soap12"])
def test_an_operation_in_another_namespace_is_answered_in_that_namespace(
    app: ProviderApplication, soap12: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    other = "http://smartertools.example/connector/"
    body, headers = soap_request(Operation.START_TICKET, [AUTH], soap12=soap12, namespace=other)
    result = wsgi_call(app, body=body, headers=headers)
    assert result.status == 200
    root = etree.fromstring(result.body)
    (res,) = root.iter(f"{{{other}}}StartTicketResult")
    assert res.find(f"{{{other}}}Success").text == "true"
    assert [c.text for c in res.find(f"{{{other}}}OutputVariables")] == ["TicketCreation=TRUE"]
    assert not list(root.iter(f"{{{NAMESPACE}}}StartTicketResult"))
    assert NAMESPACE.encode() not in result.body
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "soap.call"]
    assert record.namespace == other
    # The configured namespace still answers in its own namespace afterwards.
    again = call(app, Operation.START_TICKET, [AUTH], soap12=soap12)
    assert list(etree.fromstring(again.body).iter(f"{{{NAMESPACE}}}StartTicketResult"))


def test_a_foreign_namespace_is_echoed_through_nested_results(tmp_path: Path) -> None:
    other = "urn:acme:connector"
    fields = [CustomFieldData(name="Plan", change_list_options=True, list_options=("Gold", "Silver"))]
    rules = FixedRules({Operation.GET_CUSTOM_FIELD_OPTIONS: Decision(fields=fields)})
    app = make_app(tmp_path, Provider(Secret(WEB_SERVICE_PASSWORD), rules=rules))
    body, headers = soap_request(Operation.GET_CUSTOM_FIELD_OPTIONS, [AUTH], namespace=other)
    result = wsgi_call(app, body=body, headers=headers)
    assert result.status == 200
    envelope = etree.fromstring(result.body)
    (response,) = envelope[0]
    # Everything below the Body is in the caller's namespace; the configured one is not even declared.
    assert {etree.QName(e).namespace for e in response.iter()} == {other}
    assert NAMESPACE.encode() not in result.body
    (options,) = response.iter(f"{{{other}}}ListOptions")
    assert [c.text for c in options] == ["Gold", "Silver"]


def _spyne_state() -> tuple[int, int]:
    """Registered Spyne applications and live ComplexModel subclasses: what per-namespace classes leaked."""
    gc.collect()
    return len(appreg.applications), len(ComplexModelBase.__subclasses__()) + sum(
        len(c.__subclasses__()) for c in ComplexModelBase.__subclasses__()
    )


def test_new_namespaces_build_nothing(app: ProviderApplication) -> None:
    call(app, Operation.START_CHAT, [AUTH])
    before = _spyne_state()
    for i in range(20):
        namespace = f"urn:example:{i}"
        body, headers = soap_request(Operation.START_CHAT, [], soap12=i % 2 == 1, namespace=namespace)
        result = wsgi_call(app, body=body, headers=headers)
        assert result.status == 200
        assert list(etree.fromstring(result.body).iter(f"{{{namespace}}}StartChatResult"))
    assert _spyne_state() == before


@pytest.mark.parametrize("soap12", [False, True], ids=["soap11", "soap12"])
def test_only_accepted_namespaces_are_served(
    tmp_path: Path, soap12: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = make_app(tmp_path, accept_namespaces="urn:acme:connector, http://example.org/st/")
    for namespace in (NAMESPACE, "urn:acme:connector", "http://example.org/st/"):
        body, headers = soap_request(Operation.START_TICKET, [AUTH], soap12=soap12, namespace=namespace)
        result = wsgi_call(app, body=body, headers=headers)
        assert result.status == 200
        (res,) = etree.fromstring(result.body).iter(f"{{{namespace}}}StartTicketResult")
        assert res.find(f"{{{namespace}}}Success").text == "true"
    refused = "urn:x:0b6c4c9e"
    body, headers = soap_request(Operation.START_TICKET, [AUTH], soap12=soap12, namespace=refused)
    result = wsgi_call(app, body=body, headers=headers)
    assert result.status == (400 if soap12 else 500)
    with pytest.raises(SoapFault) as info:
        parse_answer(result.body, Operation.START_TICKET, status=result.status)
    assert info.value.code == ("soap:Sender" if soap12 else "soap:Client")
    assert "namespace is not accepted" in info.value.message
    assert refused.encode() not in result.body
    records = [r for r in caplog.records if getattr(r, "event", None) == "soap.call"]
    assert [(r.operation, r.outcome, getattr(r, "fault", None)) for r in records][-1] == (
        "StartTicket",
        "fault",
        "namespace",
    )


@pytest.mark.parametrize("prefix", ["s", "xml"], ids=["soap-envelope", "xml"])
def test_namespaces_of_the_specifications_are_refused_even_with_any(
    app: ProviderApplication, prefix: str
) -> None:
    # "s" is the SOAP 1.1 envelope namespace, "xml" the XML namespace (declared implicitly).
    body = (
        f'<s:Envelope xmlns:s="{SOAP11_ENV}"><s:Body><{prefix}:StartTicket><{prefix}:inputs/>'
        f"</{prefix}:StartTicket></s:Body></s:Envelope>"
    )
    result = wsgi_call(app, body=body.encode(), headers={"Content-Type": "text/xml"})
    assert result.status == 500
    with pytest.raises(SoapFault, match="not accepted"):
        parse_answer(result.body, Operation.START_TICKET, status=result.status)


def test_an_empty_accept_list_serves_only_the_configured_namespace(tmp_path: Path) -> None:
    app = make_app(tmp_path, accept_namespaces="")
    assert call(app, Operation.START_CHAT, [AUTH]).status == 200
    body, headers = soap_request(Operation.START_CHAT, [AUTH], namespace="http://smartertools.example/")
    result = wsgi_call(app, body=body, headers=headers)
    assert result.status == 500
    with pytest.raises(SoapFault, match="not accepted"):
        parse_answer(result.body, Operation.START_CHAT, status=result.status)


def test_configured_namespace(tmp_path: Path) -> None:
    namespace = "urn:acme:provider"
    app = make_app(tmp_path, namespace=namespace)
    body, headers = soap_request(Operation.START_CHAT, [AUTH], namespace=namespace)
    result = wsgi_call(app, body=body, headers=headers)
    assert list(etree.fromstring(result.body).iter(f"{{{namespace}}}StartChatResult"))
    wsdl = wsgi_call(app, "GET", query="wsdl").body
    assert b'targetNamespace="urn:acme:provider"' in wsdl
    assert b'soapAction="urn:acme:provider/StartChat"' in wsdl


# --- health, metrics, routes --------------------------------------------------------------


def test_healthz_is_liveness_only(sqlite_url: str, tmp_path: Path) -> None:
    app = make_app(tmp_path, database_url=sqlite_url)
    result = wsgi_call(app, "GET", "/healthz")
    assert result.status == 200 and json.loads(result.body) == {"status": "ok"}
    assert result.header("content-type") == "application/json"
    ready = wsgi_call(app, "GET", "/readyz")
    assert ready.status == 200 and json.loads(ready.body) == {"status": "ok", "database": "ok"}


def test_a_database_outage_makes_the_instance_unready_but_still_alive(tmp_path: Path) -> None:
    """Kubernetes must take the pod out of the Service, not restart it (and every other pod)."""
    app = make_app(tmp_path, database_url=f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    ready = wsgi_call(app, "GET", "/readyz")
    assert ready.status == 503
    assert json.loads(ready.body) == {"status": "unavailable", "database": "unreachable"}
    alive = wsgi_call(app, "GET", "/healthz")
    assert (alive.status, json.loads(alive.body)) == (200, {"status": "ok"})


def test_metrics_count_calls_latency_and_faults(app: ProviderApplication) -> None:
    def sample(text: str, line_start: str) -> float:
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = wsgi_call(app, "GET", "/metrics").body.decode()
    call(app, Operation.START_CHAT, [AUTH])
    wsgi_call(app, body=b"<not-xml", headers={"Content-Type": "text/xml"})
    result = wsgi_call(app, "GET", "/metrics")
    after = result.body.decode()
    assert result.status == 200 and result.header("content-type").startswith("text/plain")
    calls = 'st_provider_soap_calls_total{operation="StartChat",outcome="success"}'
    assert sample(after, calls) == sample(before, calls) + 1
    faults = 'st_provider_soap_faults_total{reason="malformed"}'
    assert sample(after, faults) == sample(before, faults) + 1
    latency = 'st_provider_soap_call_seconds_count{operation="StartChat"}'
    assert sample(after, latency) == sample(before, latency) + 1


@pytest.mark.parametrize("path", ["/", "/ExternalProvider.asmx", "/externalprovider.ASMX"])
def test_soap_paths(app: ProviderApplication, path: str) -> None:
    body, headers = soap_request(Operation.START_CHAT, [AUTH])
    assert wsgi_call(app, path=path, body=body, headers=headers).status == 200


def test_unknown_path_is_404(app: ProviderApplication) -> None:
    result = wsgi_call(app, "GET", "/etc/passwd")
    assert result.status == 404 and b"passwd" not in result.body


SPYNE_FAULT_LOGGERS = ("spyne.application", "spyne.server", "spyne.util.appreg")


def test_building_a_router_leaves_logging_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SPYNE_FAULT_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    SoapRouter(lambda request: CallResult(success=True), namespace=NAMESPACE, max_body_bytes=1024)
    assert [logging.getLogger(name).level for name in SPYNE_FAULT_LOGGERS] == [logging.NOTSET] * 3


def test_the_logging_configuration_quiets_spyne_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SPYNE_FAULT_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    quiet_spyne()
    assert [logging.getLogger(name).level for name in SPYNE_FAULT_LOGGERS] == [logging.CRITICAL] * 3
