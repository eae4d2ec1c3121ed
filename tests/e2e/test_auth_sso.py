"""Sign-on through gunicorn: zeep and raw SOAP against `st-provider serve` with real slapd."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import zeep
from zeep.transports import Transport

from provider.calls import DIRECTORY_UNAVAILABLE
from provider.domain import Operation
from provider.soap.client import CallAnswer, parse_answer
from tests.fixtures.server import AUTH, soap_request
from tests.fixtures.slapd import USERS, BlackHole, SlapdServer
from tests.support import ServerProcess, base_env, run_cli, serve

pytestmark = pytest.mark.e2e

MAX_FAILURES = 4


def soap(server: ServerProcess, operation: Operation, **variables: str) -> CallAnswer:
    entries = [AUTH, *(f"{k}={v}" for k, v in variables.items())]
    body, headers = soap_request(operation, entries)
    # A new connection per call, so gunicorn hands calls to whichever worker is free.
    response = httpx.post(
        server.endpoint, content=body, headers={**headers, "Connection": "close"}, timeout=30
    )
    return parse_answer(response.content, operation, status=response.status_code)


def log_events(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    events = []
    for line in server.log().splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == name:
            events.append(record)
    return events


def outputs(answer: CallAnswer) -> list[str]:
    return list(answer.output_variables)


@pytest.fixture(scope="module")
def ldap_server(slapd: SlapdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two single-threaded workers (so concurrent calls spread over both) on LDAP, JSON logs."""
    directory = tmp_path_factory.mktemp("auth-e2e")
    env = base_env(
        f"sqlite:///{directory / 'provider.db'}",
        **slapd.env(),
        ST_PROVIDER_LOG_FORMAT="json",
        ST_PROVIDER_THROTTLE_MAX_FAILURES=str(MAX_FAILURES),
    )
    with serve(env, directory / "server.log", workers=2, extra_args=("--threads", "1")) as server:
        yield server


@pytest.mark.slapd
def test_zeep_logs_in_against_the_directory(ldap_server: ServerProcess) -> None:
    client = zeep.Client(
        f"{ldap_server.endpoint}?wsdl", transport=Transport(timeout=30, operation_timeout=30)
    )
    alice = USERS["alice"]
    ok = client.service.Authenticate(
        inputs={
            "InputVariables": {
                "string": [AUTH, "loginUsername=EXAMPLE\\alice", f"loginPassword={alice.password}"]
            }
        }
    )
    assert ok.Success is True
    assert list(ok.OutputVariables.string) == [
        "Authentication=OK",
        "EmailAddress=alice@example.org",
        "DisplayName=Alice Example",
    ]
    wrong = client.service.Authenticate(
        inputs={"InputVariables": {"string": [AUTH, "loginUsername=jürgen", "loginPassword=wrong-password"]}}
    )
    assert (wrong.Success, wrong.Message, list(wrong.OutputVariables.string)) == (
        True,
        "Login Failure",
        ["Authentication=FAIL"],
    )
    cookie = client.service.GetSignInCookieInfo(
        inputs={"InputVariables": {"string": [AUTH, "loginUsername=jürgen@example.org"]}}
    )
    assert list(cookie.OutputVariables.string) == [
        "Authentication=OK",
        "EmailAddress=juergen@example.org",
        "DisplayName=Jürgen Müller",
    ]
    log = ldap_server.log()
    assert alice.password not in log
    assert "wrong-password" not in log


@pytest.mark.slapd
def test_brute_force_lockout_holds_across_two_workers(ldap_server: ServerProcess) -> None:
    bob = USERS["bob"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = list(
            pool.map(
                lambda _: soap(
                    ldap_server, Operation.AUTHENTICATE, loginUsername="bob", loginPassword="guess-1"
                ),
                range(MAX_FAILURES),
            )
        )
    assert all(outputs(a) == ["Authentication=FAIL"] for a in failures)

    # Now even the right password fails, in every worker, without asking the directory.
    throttled_pids: set[int] = set()
    deadline = time.monotonic() + 60
    while len(throttled_pids) < 2 and time.monotonic() < deadline:
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(
                pool.map(
                    lambda _: soap(
                        ldap_server,
                        Operation.AUTHENTICATE,
                        loginUsername="EXAMPLE\\Bob",
                        loginPassword=bob.password,
                    ),
                    range(4),
                )
            )
        assert all(a.success and outputs(a) == ["Authentication=FAIL"] for a in answers)
        throttled_pids = {
            e["pid"] for e in log_events(ldap_server, "auth.fail") if e.get("reason") == "throttled"
        }
    assert len(throttled_pids) == 2, "both workers refuse the locked user"
    counted = [
        e
        for e in log_events(ldap_server, "auth.fail")
        if e.get("reason") == "bad_password" and e.get("username") == "bob"
    ]
    assert len(counted) == MAX_FAILURES
    assert len(log_events(ldap_server, "auth.lockout")) >= 1
    # Another user is unaffected.
    alice = USERS["alice"]
    assert (
        outputs(
            soap(ldap_server, Operation.AUTHENTICATE, loginUsername="alice", loginPassword=alice.password)
        )[0]
        == "Authentication=OK"
    )


@pytest.mark.slapd
def test_groups_reach_other_operations(ldap_server: ServerProcess) -> None:
    # Without rules the answer is neutral, but the lookup must not break the call.
    answer = soap(ldap_server, Operation.GET_CUSTOM_FIELD_OPTIONS, loginUsername="carol")
    assert answer.success
    assert outputs(answer) == ["CanStartTickets=True", "CanStartChats=True"]


def test_a_silent_directory_is_success_false_not_a_hung_worker(
    black_hole: BlackHole, sqlite_url: str, tmp_path: Path
) -> None:
    env = base_env(
        sqlite_url,
        ST_PROVIDER_LDAP_URL=black_hole.url,
        ST_PROVIDER_LDAP_BIND_DN="cn=provider,dc=example,dc=org",
        ST_PROVIDER_LDAP_BIND_PASSWORD="service-password",
        ST_PROVIDER_LDAP_USER_BASE="dc=example,dc=org",
        ST_PROVIDER_LDAP_TIMEOUT="1",
    )
    with serve(env, tmp_path / "server.log", workers=2) as server:
        answer = soap(server, Operation.AUTHENTICATE, loginUsername="alice", loginPassword="some-password")
        assert (answer.success, answer.message) == (False, DIRECTORY_UNAVAILABLE)
        # The other operations go on without a user.
        fields = soap(server, Operation.START_TICKET, loginUsername="alice")
        assert fields.success and outputs(fields) == ["TicketCreation=TRUE"]
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        assert "service-password" not in server.log()


def test_local_users_log_in_through_gunicorn(sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(sqlite_url, ST_PROVIDER_AUTH="local")
    added = run_cli(
        ["users", "add", "Zoë", "--email", "zoe@example.org", "--display-name", "Zoë Local"],
        env,
        input_text="Zoës-passwort-1\n",
    )
    assert added.returncode == 0, added.stderr
    with serve(env, tmp_path / "server.log", workers=2) as server:
        ok = soap(server, Operation.AUTHENTICATE, loginUsername="zoë", loginPassword="Zoës-passwort-1")
        assert outputs(ok) == ["Authentication=OK", "EmailAddress=zoe@example.org", "DisplayName=Zoë Local"]
        wrong = soap(server, Operation.AUTHENTICATE, loginUsername="zoë", loginPassword="nope-nope")
        assert outputs(wrong) == ["Authentication=FAIL"]
        cookie = soap(server, Operation.GET_SIGN_IN_COOKIE_INFO, loginUsername="ZOË")
        assert outputs(cookie)[0] == "Authentication=OK"
