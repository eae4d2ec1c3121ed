"""`st-provider serve`, `call` and `wsdl` as real processes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from provider.db.migrate import pending
from provider.domain import Operation
from tests.fixtures.server import AUTH, soap_request
from tests.support import (
    REPO,
    WEB_SERVICE_PASSWORD,
    ServerProcess,
    base_env,
    create_pg_database,
    drop_pg_database,
    free_port,
    pg_url,
    run_cli,
    serve,
    start_serve,
    wait_http,
)

pytestmark = pytest.mark.e2e

CHECKED_IN = REPO / "wsdl" / "ExternalProvider.wsdl"
WRONG_PASSWORD = "WrongPass-0815-never-logged"


def test_serve_refuses_to_start_without_the_web_service_password(tmp_path: Path) -> None:
    for value in (None, ""):
        env = base_env(f"sqlite:///{tmp_path / 'never.db'}")
        if value is None:
            del env["ST_PROVIDER_WEB_SERVICE_PASSWORD"]
        else:
            env["ST_PROVIDER_WEB_SERVICE_PASSWORD"] = value
        result = run_cli(["serve", "--bind", f"127.0.0.1:{free_port()}"], env)
        assert result.returncode == 2
        assert "ST_PROVIDER_WEB_SERVICE_PASSWORD is required" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "never.db").exists()


def test_serve_refuses_a_bad_bind_address(tmp_path: Path) -> None:
    result = run_cli(["serve", "--bind", "localhost"], base_env(f"sqlite:///{tmp_path / 'x.db'}"))
    assert result.returncode == 2
    assert "--bind" in result.stderr and "Traceback" not in result.stderr


def test_provider_server_fixture_serves_health_soap_and_the_call_command(
    provider_server: ServerProcess, sqlite_url: str
) -> None:
    health = httpx.get(f"{provider_server.url}/healthz", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    env = base_env(sqlite_url)
    url = provider_server.endpoint

    ok = run_cli(["call", "StartTicket", "loginUsername=bob", "--url", url], env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[:4] == [
        "Success: true",
        "Message: Ticket Creation Successful",
        "OutputVariables:",
        "  TicketCreation=TRUE",
    ]

    soap12 = run_cli(["call", "getcustomfieldoptions", "--soap12", "--url", f"{provider_server.url}/"], env)
    assert soap12.returncode == 0, soap12.stderr
    assert "  CanStartTickets=True" in soap12.stdout.splitlines()

    denied = run_cli(["call", "StartChat", f"authPW={WRONG_PASSWORD}", "--url", url], env)
    assert denied.returncode == 1
    assert denied.stdout.splitlines()[:2] == ["Success: false", "Message: Permission Denied"]

    unreachable = run_cli(
        ["call", "StartChat", "--url", f"http://127.0.0.1:{free_port()}/", "--timeout", "3"], env
    )
    assert unreachable.returncode == 1
    assert "cannot reach" in unreachable.stderr and "Traceback" not in unreachable.stderr

    unknown = run_cli(["call", "DropTables", "--url", url], env)
    assert unknown.returncode == 2 and "unknown operation" in unknown.stderr

    log = provider_server.log()
    assert "event='soap.call'" in log and "event='security.permission_denied'" in log
    assert WRONG_PASSWORD not in log and WEB_SERVICE_PASSWORD not in log


def test_wsdl_command_prints_the_contract(tmp_path: Path) -> None:
    env = base_env(f"sqlite:///{tmp_path / 'x.db'}")
    result = run_cli(["wsdl"], env)
    assert result.returncode == 0
    assert result.stdout.encode() == CHECKED_IN.read_bytes()
    based = run_cli(["wsdl", "--url", "https://help.example.com/provider/"], env)
    assert based.stdout.count('location="https://help.example.com/provider/ExternalProvider.asmx"') == 2
    env["ST_PROVIDER_NAMESPACE"] = "urn:acme:provider"
    other = run_cli(["wsdl"], env)
    assert 'soapAction="urn:acme:provider/Authenticate"' in other.stdout


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_migrates_logs_counts_across_workers_and_cleans_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"  # never migrated: serve does it
    env = base_env(url, ST_PROVIDER_LOG_FORMAT="json")
    calls = 30
    with serve(
        env, tmp_path / "server.log", workers=2, extra_args=("--threads", "2", "--no-worker")
    ) as server:
        assert not pending(url)
        for _ in range(calls - 2):
            body, headers = soap_request(Operation.START_CHAT, [AUTH])
            assert httpx.post(server.endpoint, content=body, headers=headers, timeout=10).status_code == 200
        body, headers = soap_request(Operation.START_TICKET, [f"authPW={WRONG_PASSWORD}"], soap12=True)
        assert httpx.post(server.endpoint, content=body, headers=headers, timeout=10).status_code == 200
        malformed = f"<soap:Envelope><authPW>{WRONG_PASSWORD}".encode()
        bad = httpx.post(server.endpoint, content=malformed, headers={"Content-Type": "text/xml"}, timeout=10)
        assert bad.status_code == 500

        # Every scrape, whichever worker answers it, sees every worker's calls.
        for _ in range(6):
            metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
            total = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("st_provider_soap_calls_total{")
            )
            assert total == calls
        (start,) = [e for e in _json_lines(server.log()) if e.get("event") == "server.start"]
        metrics_dir = Path(str(start["metrics_dir"]))
        assert any(metrics_dir.glob("counter_*.db"))
    log = server.log()
    events = _json_lines(log)
    soap_calls = [e for e in events if e.get("event") == "soap.call"]
    assert len(soap_calls) == calls
    for entry in soap_calls:
        assert {"operation", "outcome", "duration_ms", "request_id", "client"} <= entry.keys()
        assert entry["client"] == "127.0.0.1" and len(str(entry["request_id"])) == 32
    outcomes = sorted({(e["operation"], e["outcome"]) for e in soap_calls})
    assert outcomes == [("StartChat", "success"), ("StartTicket", "failure"), ("unknown", "fault")]
    (denied,) = [e for e in events if e.get("event") == "security.permission_denied"]
    assert denied["password_supplied"] is True
    assert WRONG_PASSWORD not in log and WEB_SERVICE_PASSWORD not in log
    assert not metrics_dir.exists()


def test_a_worker_is_replaced_after_max_requests(tmp_path: Path) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("max_requests = 3\nmax_requests_jitter = 0\n")
    env = base_env(f"sqlite:///{tmp_path / 'provider.db'}", ST_PROVIDER_LOG_FORMAT="json")
    args = ("--no-worker", "--gunicorn-config", str(config))
    # A new connection per request: a stopping gthread worker may still answer a request
    # already sent on a kept-alive connection (gunicorn's STOP_KEEPALIVE_LINGER), which would
    # make the count depend on how fast the client sends its next request.
    with (
        serve(env, tmp_path / "server.log", workers=1, extra_args=args) as server,
        httpx.Client(timeout=30, headers={"Connection": "close"}) as client,
    ):
        for _ in range(7):  # /healthz at start was the first
            assert client.get(f"{server.url}/healthz").status_code == 200
    ready = [e for e in _json_lines(server.log()) if e.get("event") == "http.worker_ready"]
    assert len({e["pid"] for e in ready}) >= 3
    assert {e["max_requests"] for e in ready} == {3}


@pytest.mark.postgres
def test_two_instances_start_together_on_a_fresh_postgres_database(tmp_path: Path) -> None:
    name = create_pg_database()  # empty: both instances race to migrate it
    url = pg_url(name)
    servers: list[ServerProcess] = []
    try:
        for index in range(2):
            servers.append(start_serve(base_env(url), tmp_path / f"server{index}.log", workers=1))
        for server in servers:
            wait_http(f"{server.url}/healthz", timeout=60, process=server.process)
        assert not pending(url)
        for server in servers:
            body, headers = soap_request(Operation.START_CHAT, [AUTH])
            response = httpx.post(server.endpoint, content=body, headers=headers, timeout=10)
            assert response.status_code == 200
    finally:
        for server in servers:
            server.stop()
        drop_pg_database(name)
    for server in servers:
        assert "Traceback" not in server.log()
