"""Malformed numeric input through gunicorn, on SQLite and PostgreSQL: a defined
``Invalid Input`` answer (Success=false), never a fault and never "retry"."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from provider.calls import INVALID_INPUT
from provider.domain import Operation
from provider.soap.client import parse_answer
from tests.fixtures.server import AUTH, soap_request
from tests.support import ServerProcess, base_env, e2e_database_url, serve

pytestmark = pytest.mark.e2e

EXPECTED = f"{INVALID_INPUT}: eventType must be a whole number between 0 and 2147483647"
MALFORMED = {
    "superscript": "²",
    "30 digits": "9" * 30,
    "5000 digits": "9" * 5000,
    "over 32 bits": "4294967296",
}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp(f"invalid-{request.param}")
    with (
        e2e_database_url(request, directory) as url,
        serve(base_env(url), directory / "server.log", workers=1) as running,
    ):
        yield running
        assert "Traceback" not in running.log()


def post(server: ServerProcess, op: Operation, *entries: str) -> httpx.Response:
    body, headers = soap_request(op, [AUTH, *entries])
    return httpx.post(server.endpoint, content=body, headers=headers, timeout=10)


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_event_type_is_invalid_input(server: ServerProcess, raw: str) -> None:
    response = post(server, Operation.NOTIFY_EVENT_FIRED, f"eventType={raw}", "args_Title=x")
    assert response.status_code == 200, response.text[:500]
    answer = parse_answer(response.content, Operation.NOTIFY_EVENT_FIRED)
    assert (answer.success, answer.message) == (False, EXPECTED)
    assert "retry" not in response.text.lower()


@pytest.mark.parametrize("op", [o for o in Operation if o is not Operation.NOTIFY_EVENT_FIRED])
def test_every_other_operation_answers_it_the_same_way(server: ServerProcess, op: Operation) -> None:
    response = post(server, op, "loginUsername=ann", "loginPassword=pw", "eventType=²")
    assert response.status_code == 200, response.text[:500]
    answer = parse_answer(response.content, op)
    assert (answer.success, answer.message) == (False, EXPECTED)


def test_a_valid_event_type_is_still_stored(server: ServerProcess) -> None:
    response = post(server, Operation.NOTIFY_EVENT_FIRED, "eventType=2147483647")
    answer = parse_answer(response.content, Operation.NOTIFY_EVENT_FIRED)
    assert (answer.success, answer.message) == (True, "Event Notification Successful")
