"""The public help page on GET/HEAD of the SOAP endpoint (issue 12): content, samples, escaping, headers."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from lxml import etree, html

from provider.app import ProviderApplication, build_application
from provider.calls import Provider
from provider.domain import Operation
from provider.settings import Secret, Settings
from provider.soap.client import parse_answer
from provider.soap.contract import OPERATIONS, SOAP11_ENV, SOAP12_ENV, soap_action
from tests.fixtures.server import AUTH, NAMESPACE, WsgiResult, soap_request, wsgi_call
from tests.support import WEB_SERVICE_PASSWORD

HOSTILE = '<script>alert("x")</script>'


def make_app(tmp_path: Path, **values: object) -> ProviderApplication:
    settings = Settings.from_mapping(
        {
            "web_service_password": WEB_SERVICE_PASSWORD,
            "database_url": f"sqlite:///{tmp_path / 'u.db'}",
            **values,
        }
    )
    return build_application(settings, provider=Provider(Secret(WEB_SERVICE_PASSWORD)))


@pytest.fixture
def app(tmp_path: Path) -> ProviderApplication:
    return make_app(tmp_path)


def page(result: WsgiResult) -> html.HtmlElement:
    assert result.header("content-type") == "text/html; charset=utf-8"
    return html.fromstring(result.body)


def sample(doc: html.HtmlElement, name: str) -> tuple[dict[str, str], str, str]:
    """(headers, start line, envelope) of the sample ``<pre id=name>``."""
    text = doc.get_element_by_id(name).text_content()
    head, _, envelope = text.partition("\n\n")
    start, *lines = head.split("\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return headers, start, envelope


def assert_security_headers(result: WsgiResult) -> None:
    assert result.header("x-frame-options") == "DENY"
    assert result.header("referrer-policy") == "no-referrer"
    assert result.header("x-content-type-options") == "nosniff"
    assert result.header("allow") == "GET, HEAD, POST"
    csp = result.header("content-security-policy") or ""
    assert "default-src 'none'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp and "http" not in csp


def test_index_lists_the_operations_the_wsdl_and_what_to_enter(app: ProviderApplication) -> None:
    result = wsgi_call(app, "GET", headers={"Host": "st.example.org"})
    assert result.status == 200
    doc = page(result)
    assert "ExternalProvider" in doc.findtext(".//title")
    assert [h.text_content() for h in doc.iter("h1")] == ["ExternalProvider"]
    links = {a.text_content(): a.get("href") for a in doc.xpath('//ul[@class="operations"]//a')}
    assert links == {spec.name: f"?op={spec.name}" for spec in OPERATIONS}
    text = doc.text_content()
    assert "http://st.example.org/ExternalProvider.asmx?wsdl" in text
    assert "Web Service URL" in text and "Web Service Password" in text
    assert (
        "http://st.example.org/ExternalProvider.asmx"
        in doc.xpath('//dd/code[@class="copy"]')[0].text_content()
    )
    assert WEB_SERVICE_PASSWORD not in result.body.decode()
    assert_security_headers(result)


def test_root_path_and_any_case_serve_the_page(app: ProviderApplication) -> None:
    for path in ("/", "/externalprovider.ASMX"):
        result = wsgi_call(app, "GET", path)
        assert result.status == 200 and b"<h1>ExternalProvider</h1>" in result.body


def test_addresses_follow_the_public_url_as_the_wsdl_does(tmp_path: Path) -> None:
    app = make_app(tmp_path, public_url="https://help.example.com/st")
    result = wsgi_call(app, "GET", headers={"Host": "internal:8080"}, query="op=StartTicket")
    doc = page(result)
    headers, start, _ = sample(doc, "soap11-request")
    assert start == "POST /st/ExternalProvider.asmx HTTP/1.1"
    assert headers["Host"] == "help.example.com"
    assert "https://help.example.com/st/ExternalProvider.asmx?wsdl" in doc.text_content()
    assert "internal:8080" not in result.body.decode()
    wsdl = etree.fromstring(wsgi_call(app, "GET", query="wsdl", headers={"Host": "internal:8080"}).body)
    address = wsdl.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert (
        address is not None and address.get("location") == "https://help.example.com/st/ExternalProvider.asmx"
    )


def fill(envelope: str) -> bytes:
    """The sample with its placeholders filled: the real password and a numeric event type."""
    filled = envelope.replace("authPW=string", AUTH).replace("eventType=int", "eventType=501000")
    return filled.encode()


def local_names(root: etree._Element) -> set[str]:
    return {etree.QName(e).localname for e in root.iter() if isinstance(e.tag, str)}


@pytest.mark.parametrize("spec", OPERATIONS, ids=lambda s: s.name)
def test_each_operation_page_has_samples_the_real_endpoint_accepts(
    app: ProviderApplication, spec: object
) -> None:
    from provider.soap.contract import OperationSpec

    assert isinstance(spec, OperationSpec)
    result = wsgi_call(app, "GET", query=f"op={spec.name.lower()}", headers={"Host": "st.example.org:81"})
    assert result.status == 200
    doc = page(result)
    assert [h.text_content() for h in doc.iter("h1")] == [spec.name]
    assert spec.name in doc.findtext(".//title")
    assert "authPW" in doc.xpath("//table")[0].text_content()
    for version, envelope_ns, content_type in (
        ("11", SOAP11_ENV, "text/xml; charset=utf-8"),
        ("12", SOAP12_ENV, "application/soap+xml; charset=utf-8"),
    ):
        headers, start, envelope = sample(doc, f"soap{version}-request")
        assert start == "POST /ExternalProvider.asmx HTTP/1.1"
        assert headers["Host"] == "st.example.org:81"
        assert headers["Content-Type"] == content_type
        assert headers.get("SOAPAction") == (
            f'"{soap_action(NAMESPACE, spec.name)}"' if version == "11" else None
        )
        request = etree.fromstring(envelope.encode())
        assert request.tag == f"{{{envelope_ns}}}Envelope"
        assert etree.QName(request[0][0]).localname == spec.name
        answer = wsgi_call(app, body=fill(envelope), headers={"Content-Type": headers["Content-Type"]})
        assert answer.status == 200, answer.body
        parse_answer(answer.body, Operation(spec.name))
        response_headers, response_start, response_envelope = sample(doc, f"soap{version}-response")
        assert response_start == "HTTP/1.1 200 OK"
        assert response_headers["Content-Type"] == content_type
        response = etree.fromstring(response_envelope.encode())
        # The sample shows every element the real answer can carry.
        assert local_names(etree.fromstring(answer.body)) <= local_names(response)


def test_every_documented_input_variable_is_in_the_sample(app: ProviderApplication) -> None:
    doc = page(wsgi_call(app, "GET", query="op=GetUserDetails"))
    _, _, envelope = sample(doc, "soap11-request")
    strings = [e.text for e in etree.fromstring(envelope.encode()).iter(f"{{{NAMESPACE}}}string")]
    assert strings == [
        f"{name}=string"
        for name in (
            "authPW",
            "username",
            "email",
            "brandName",
            "departmentName",
            "groupName",
            "ticketNumber",
            "interactionType",
        )
    ]


def test_unknown_operation_is_404_with_the_list_escaped(app: ProviderApplication) -> None:
    result = wsgi_call(app, "GET", query="op=%3Cscript%3Ealert(%22x%22)%3C/script%3E")
    assert result.status == 404
    body = result.body.decode()
    assert HOSTILE not in body and "&lt;script&gt;" in body
    doc = page(result)
    assert len(doc.xpath('//ul[@class="operations"]//a')) == len(OPERATIONS)
    assert_security_headers(result)


def test_hostile_host_header_never_reaches_the_page(app: ProviderApplication) -> None:
    for query in ("", "op=Authenticate"):
        result = wsgi_call(app, "GET", query=query, headers={"Host": f'evil">{HOSTILE}'})
        assert result.status == 200
        body = result.body.decode()
        assert "<script" not in body and "evil" not in body
        assert "provider.internal:8080" in body  # the server's own name instead


def test_hostile_namespace_is_escaped_and_samples_stay_well_formed(tmp_path: Path) -> None:
    namespace = "urn:x?a=1&b=&lt;i&gt;"
    app = make_app(tmp_path, namespace=namespace)
    result = wsgi_call(app, "GET", query="op=StartChat")
    doc = page(result)
    assert doc.xpath("//i") == []
    headers, _, envelope = sample(doc, "soap11-request")
    assert etree.fromstring(envelope.encode())[0][0].tag == f"{{{namespace}}}StartChat"
    assert headers["SOAPAction"] == f'"{soap_action(namespace, "StartChat")}"'


def test_inline_stylesheet_is_allowed_by_its_hash_and_nothing_else_is_loaded(
    app: ProviderApplication,
) -> None:
    result = wsgi_call(app, "GET", query="op=StartTicket")
    body = result.body.decode()
    style = re.search(r"<style>(.*?)</style>", body, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in (result.header("content-security-policy") or "")
    doc = page(result)
    assert doc.xpath("//script|//link|//img|//iframe|//form") == []
    assert all(not (a.get("href") or "").startswith("//") for a in doc.iter("a"))


@pytest.mark.parametrize("query", ["", "op=NotifyEventFired", "op=nope"])
def test_head_has_the_headers_and_no_body(app: ProviderApplication, query: str) -> None:
    get = wsgi_call(app, "GET", query=query)
    head = wsgi_call(app, "HEAD", query=query)
    assert head.status == get.status
    assert head.body == b""
    assert head.headers == get.headers


def test_the_page_shows_no_version_secret_or_trace(app: ProviderApplication) -> None:
    from importlib.metadata import version

    for query in ("", "op=Authenticate", "op=%ff%fe"):
        body = wsgi_call(app, "GET", query=query).body.decode()
        assert WEB_SERVICE_PASSWORD not in body
        assert "Traceback" not in body and "spyne" not in body.lower() and "gunicorn" not in body.lower()
        assert version("smartertrack-provider") not in body


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_are_405_with_a_truthful_allow(app: ProviderApplication, method: str) -> None:
    result = wsgi_call(app, method)
    assert result.status == 405
    assert result.header("allow") == "GET, HEAD, POST"


def test_soap_endpoint_answers_exactly_as_before(app: ProviderApplication) -> None:
    wsdl = wsgi_call(app, "GET", query="WSDL")
    assert wsdl.status == 200 and wsdl.header("content-type") == "text/xml; charset=utf-8"
    assert etree.fromstring(wsdl.body).tag == "{http://schemas.xmlsoap.org/wsdl/}definitions"
    head = wsgi_call(app, "HEAD", query="wsdl")
    assert (
        head.status == 200 and head.body == b"" and head.header("content-type") == "text/xml; charset=utf-8"
    )
    for soap12 in (False, True):
        body, headers = soap_request(Operation.START_TICKET, [AUTH], soap12=soap12)
        result = wsgi_call(app, body=body, headers=headers)
        assert result.status == 200
        assert parse_answer(result.body, Operation.START_TICKET).success
        assert result.header("allow") is None and result.header("content-security-policy") is None
