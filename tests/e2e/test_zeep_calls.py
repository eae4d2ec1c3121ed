"""zeep, loading the served WSDL, calls every operation against gunicorn over SOAP 1.1 and 1.2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zeep
from lxml import etree

from provider.calls import PERMISSION_DENIED
from provider.domain import Operation
from tests.fixtures.server import AUTH, soap_request
from tests.support import ServerProcess, base_env, serve

pytestmark = pytest.mark.e2e

PORTS = {"soap11": "ExternalProviderSoap", "soap12": "ExternalProviderSoap12"}
EXPECTED = {
    Operation.AUTHENTICATE: (True, "Login Failure", ["Authentication=FAIL"]),
    Operation.GET_SIGN_IN_COOKIE_INFO: (True, "Login Failure", ["Authentication=FAIL"]),
    Operation.GET_CUSTOM_FIELD_OPTIONS: (True, "Result okay", ["CanStartTickets=True", "CanStartChats=True"]),
    Operation.START_TICKET: (True, "Ticket Creation Successful", ["TicketCreation=TRUE"]),
    Operation.START_CHAT: (True, "Chat Creation Successful", ["ChatCreation=TRUE"]),
    Operation.GET_USER_DETAILS: (True, "User Account Information Retrieved Successfully", []),
    Operation.NOTIFY_EVENT_FIRED: (True, "Event Notification Successful", None),
}
INPUTS = [AUTH, "loginUsername=alice", "loginPassword=pw", "eventType=502000", "args_Title=Hello"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # A fresh, unmigrated database: serve migrates it before forking.
    directory = tmp_path_factory.mktemp("zeep")
    with serve(base_env(f"sqlite:///{directory / 'provider.db'}"), directory / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> zeep.Client:
    return zeep.Client(f"{server.endpoint}?wsdl")


def strings(value: object) -> list[str] | None:
    return None if value is None else list(value.string)  # type: ignore[attr-defined]


@pytest.mark.parametrize("port", list(PORTS))
@pytest.mark.parametrize("op", list(Operation))
def test_every_operation_through_the_served_wsdl(client: zeep.Client, op: Operation, port: str) -> None:
    service = client.bind("ExternalProvider", PORTS[port])
    result = getattr(service, op.value)(inputs={"InputVariables": {"string": INPUTS}})
    success, message, outputs = EXPECTED[op]
    assert result.Success is success
    assert result.Message == message
    if outputs is None:
        assert not hasattr(result, "OutputVariables") or result.OutputVariables is None
    else:
        assert (strings(result.OutputVariables) or []) == outputs  # zeep reads an empty list as None
    if op is Operation.GET_CUSTOM_FIELD_OPTIONS:
        assert (
            result.CustomFieldDataItems is None
            or list(result.CustomFieldDataItems.ExternalCustomFieldData) == []
        )
    if op is Operation.GET_USER_DETAILS:
        assert result.UserInfoHtml is None


@pytest.mark.parametrize("port", list(PORTS))
def test_wrong_password_is_permission_denied(client: zeep.Client, port: str) -> None:
    service = client.bind("ExternalProvider", PORTS[port])
    result = service.StartTicket(inputs={"InputVariables": {"string": ["authPW=nope", "loginUsername=bob"]}})
    assert (result.Success, result.Message) == (False, PERMISSION_DENIED)


@pytest.mark.parametrize("port", list(PORTS))
def test_missing_inputs_are_not_a_crash(client: zeep.Client, port: str) -> None:
    service = client.bind("ExternalProvider", PORTS[port])
    result = service.StartChat()
    assert (result.Success, result.Message) == (False, PERMISSION_DENIED)


def test_zeep_sends_each_binding_in_its_soap_version(server: ServerProcess, client: zeep.Client) -> None:
    for port, content_type in (("soap11", "text/xml"), ("soap12", "application/soap+xml")):
        service = client.bind("ExternalProvider", PORTS[port])
        node = client.create_message(service, "StartChat", inputs={"InputVariables": {"string": [AUTH]}})
        body = etree.tostring(node)
        binding = client.wsdl.services["ExternalProvider"].ports[PORTS[port]].binding
        headers = {"Content-Type": f"{content_type}; charset=utf-8"}
        if port == "soap11":
            headers["SOAPAction"] = f'"{binding._operations["StartChat"].soapaction}"'
        response = httpx.post(server.endpoint, content=body, headers=headers, timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(content_type)


def test_an_operation_in_another_namespace_over_http(server: ServerProcess) -> None:
    other = "http://smartertools.example/connector/"
    body, headers = soap_request(Operation.START_CHAT, [AUTH], namespace=other)
    response = httpx.post(server.endpoint, content=body, headers=headers, timeout=10)
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    (result,) = root.iter(f"{{{other}}}StartChatResult")
    assert result.find(f"{{{other}}}Success").text == "true"


def test_the_wsdl_served_over_http_matches_the_checked_in_file(server: ServerProcess, tmp_path: Path) -> None:
    from tests.support import REPO

    served = httpx.get(f"{server.endpoint}?WSDL", timeout=10).content
    address = f"{server.endpoint}".encode()
    assert served.count(address) == 2
    checked_in = (REPO / "wsdl" / "ExternalProvider.wsdl").read_bytes()
    assert served.replace(address, b"http://localhost/ExternalProvider.asmx") == checked_in
