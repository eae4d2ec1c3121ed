"""``rules test RequestSignInCode`` and the console's Test a call say who may get a sign-in
code, as ``/signin-code`` decides it (the rules and users of ``test_signin_codes``), and
nothing is recorded, stored or sent."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from werkzeug.test import Client

from provider.app import build_application
from provider.auth.local import ADMIN, VIEWER, LocalUsers, ScryptHasher
from provider.db.events import DeliveryRecord
from provider.db.session import Database
from provider.db.signin import SignInCode, SignInRequest
from tests.integration import test_signin_codes as signin_tests
from tests.integration.test_console import settings as console_settings
from tests.integration.test_console import sign_in
from tests.integration.test_console_tools import run_test
from tests.integration.test_worker_reports import Cli
from tests.support import base_env

PASSWORD = "correct horse battery"
setup = signin_tests.setup  # the rules file (RequestSignInCode rules) and the local users


def nothing_kept(database: Database) -> bool:
    with database.session() as session:
        return all(
            session.scalar(sa.select(sa.func.count()).select_from(model)) == 0
            for model in (SignInCode, SignInRequest, DeliveryRecord)
        )


def test_rules_test_says_who_may_get_a_code(
    setup: Database, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(base_env(database_url, ST_PROVIDER_AUTH="local"), capsys)

    def answer(address: str) -> dict[str, object]:
        status, out, err = cli("rules", "test", "RequestSignInCode", f"address={address}", "--json")
        assert status == 0, err
        payload: dict[str, object] = json.loads(out)
        assert payload["operation"] == "RequestSignInCode"
        return payload

    alice = answer("ALICE@example.org")
    assert alice["user"] == "alice" and alice["result"]["success"]  # type: ignore[index]
    assert "for alice" in alice["result"]["message"]  # type: ignore[index]
    blocked = answer("blocked@example.org")
    assert not blocked["result"]["success"] and "refused" in blocked["result"]["message"]  # type: ignore[index]
    assert [t["outcome"] for t in blocked["trace"] if t["rule"] == "not-this-one"] == ["matched"]  # type: ignore[attr-defined]
    partner = answer("new@partner.example.org")
    assert partner["result"]["success"] and partner["matched"] == ["partner-customers"]  # type: ignore[index]
    stranger = answer("+1 415 555 0100")
    assert not stranger["result"]["success"] and "unknown" in stranger["result"]["message"]  # type: ignore[index]
    status, out, err = cli("rules", "test", "RequestSignInCode", "address=not an address")
    assert status != 0 and "address=" in err
    status, out, err = cli("rules", "test", "requestsignincode", "address=+1 (415) 555-0123")
    assert status == 0 and "RequestSignInCode" in out and "bob" in out, err
    assert nothing_kept(setup)


def test_the_console_test_a_call_offers_and_runs_it(setup: Database, database_url: str) -> None:
    users = LocalUsers(setup, ScryptHasher(log_n=10))
    users.add("root", PASSWORD, console_role=ADMIN)
    users.add("watcher", PASSWORD, console_role=VIEWER)
    client = Client(build_application(console_settings(database_url, auth="local"), database=setup))
    assert sign_in(client, "watcher", PASSWORD).status_code == 302
    form = client.get("/admin/test-call?operation=RequestSignInCode").get_data(as_text=True)
    assert "<option selected>RequestSignInCode</option>" in form and "address=customer@example.com" in form
    status, html = run_test(client, "RequestSignInCode", "address=alice@example.org")
    assert status == 200 and "a code would be sent to alice@example.org for alice" in html
    status, html = run_test(client, "RequestSignInCode", "kind=email")
    assert status == 400 and "RequestSignInCode needs address=" in html
    assert nothing_kept(setup)
