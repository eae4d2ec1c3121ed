"""No sign-in code is readable by anyone but its customer, on SQLite and PostgreSQL.

A code is requested (the rules file and users of ``test_signin_codes``); ``deliveries
show``/``list`` (table, JSON, CSV), the reports and the console's Deliveries page (as a
viewer) never show it, nor a partner answer echoing it; the message still reaches the
customer; once the code is redeemed, replaced or expired (retention purge) the stored
delivery (parameters, errors) no longer holds it; no log record or journal entry carries it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from werkzeug.test import Client

from provider.app import build_application
from provider.auth.local import ADMIN, VIEWER, LocalUsers, ScryptHasher
from provider.db.events import DeliveryAttempt, DeliveryRecord
from provider.db.session import Database
from provider.db.signin import SignInCode
from provider.domain import CallRequest, Operation
from provider.events import reports
from provider.events.worker import Worker
from provider.journal.entry import journal_entry
from provider.journal.retention import purge
from provider.redact import REDACTED
from provider.settings import RetentionSettings, Settings
from provider.variables import InputVariables
from tests.emulators.smtp import SmtpServer
from tests.integration import test_signin_codes as signin_tests
from tests.integration.test_console import settings as console_settings
from tests.integration.test_console import sign_in
from tests.integration.test_signin_codes import (
    code_in,
    deliver,
    login,
    otp_settings,
    provider_for,
    requests_for,
)
from tests.integration.test_worker_reports import Cli
from tests.support import base_env

CONSOLE_PASSWORD = "correct horse battery"
# the fixtures of the sign-in code tests: their rules file, users, SMTP receiver and workers
setup = signin_tests.setup
workers = signin_tests.workers


def settings() -> Settings:
    # 8 upper-case letters and digits: never part of a timestamp or an id in the outputs
    return otp_settings(alphabet="alphanumeric", length=8)


def stored_params(database: Database) -> list[str]:
    with database.session() as session:
        query = sa.select(DeliveryRecord).order_by(DeliveryRecord.id)
        return [json.dumps(d.params) for d in session.scalars(query).all()]


def requested_code(database: Database, address: str) -> str:
    """Request a code for ``address``; the code, as its (not yet sent) delivery holds it."""
    assert requests_for(settings(), database).request(address, "10.0.0.1").value == "sent"
    return code_in(stored_params(database)[-1])


def test_reports_cli_and_console_never_show_the_code(
    setup: Database, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = requested_code(setup, "alice@example.org")
    with setup.session() as session:
        delivery_id = session.scalars(sa.select(DeliveryRecord.id)).one()

    detail = reports.get_delivery(setup, delivery_id)
    assert detail.params and set(detail.params.values()) == {REDACTED, "alice@example.org"}
    cli = Cli(base_env(database_url), capsys)
    for args in (
        ("deliveries", "show", str(delivery_id)),
        ("deliveries", "show", str(delivery_id), "--format", "json"),
        ("deliveries", "list"),
        ("deliveries", "list", "--format", "json"),
        ("deliveries", "list", "--format", "csv"),
    ):
        status, out, err = cli(*args)
        assert status == 0, err
        assert "alice@example.org" in out and code not in out + err, args

    users = LocalUsers(setup, ScryptHasher(log_n=10))
    users.add("root", CONSOLE_PASSWORD, console_role=ADMIN)  # without an admin the console is shut
    users.add("watcher", CONSOLE_PASSWORD, console_role=VIEWER)
    console = Client(build_application(console_settings(database_url), database=setup))
    assert sign_in(console, "watcher", CONSOLE_PASSWORD).status_code == 302
    event_id = detail.delivery.event_id
    for path in (
        "/admin/deliveries",
        "/admin/deliveries.csv",
        f"/admin/deliveries/{delivery_id}",
        "/admin/events",
        f"/admin/events/{event_id}",
        f"/admin/deliveries?event_id={event_id}",
    ):
        page = console.get(path)
        assert page.status_code == 200
        assert "alice@example.org" in page.get_data(as_text=True) or "events" in path, path
        assert code not in page.get_data(as_text=True), path


def test_a_redeemed_code_leaves_the_outbox_and_the_logs_never_hold_it(
    setup: Database, smtp_server: SmtpServer, workers: list[Worker], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="provider")
    code = requested_code(setup, "alice@example.org")
    assert deliver(settings(), setup, workers) == 1
    body = smtp_server.messages[0].message.get_body(("plain",))
    assert body is not None and code_in(body.get_content()) == code  # the customer gets it
    assert code in stored_params(setup)[0]  # kept until used (a retry would need it)

    request = CallRequest(
        Operation.AUTHENTICATE,
        InputVariables(
            [
                ("authPW", signin_tests.PASSWORD),
                ("loginUsername", "alice@example.org"),
                ("loginPassword", code),
            ]
        ),
        client_address="10.1.1.1",
    )
    result = provider_for(settings(), setup).call(request)
    assert result.success and dict(result.output.items())["Authentication"] == "OK"
    entry = journal_entry(
        at=datetime.now(UTC),
        operation="Authenticate",
        transport_outcome="ok",
        fault=None,
        permission_denied=False,
        request=request,
        result=result,
        request_id="r1",
        client="10.1.1.1",
        duration_ms=1.0,
    )
    assert entry.username == "alice" and code not in json.dumps(asdict(entry), default=str)
    [params] = stored_params(setup)
    assert code not in params and REDACTED in params and "your code is" in params
    for record in (r for r in caplog.records if r.name.startswith("provider")):  # not the SMTP receiver's
        assert code not in json.dumps({k: str(v) for k, v in vars(record).items()}), record.getMessage()


def test_a_partner_answer_echoing_the_code_is_hidden_then_scrubbed(
    setup: Database, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = requested_code(setup, "alice@example.org")
    echo = f"webhook: HTTP 422: message 'your code is {code} (5 minutes)' rejected"
    with setup.session() as session:  # what the worker stores when a partner echoes the message
        delivery = session.scalars(sa.select(DeliveryRecord)).one()
        delivery.last_error = echo
        session.add(
            DeliveryAttempt(
                delivery_id=delivery.id,
                number=1,
                started_at=datetime.now(UTC),
                duration=0.1,
                outcome="failed",
                http_status=422,
                error=echo,
            )
        )
        delivery_id = delivery.id
    cli = Cli(base_env(database_url), capsys)
    for args in (("deliveries", "list", "--format", "json"), ("deliveries", "show", str(delivery_id))):
        status, out, err = cli(*args)
        assert status == 0 and code not in err and "HTTP 422: message" in out and code not in out, args
    assert login(provider_for(settings(), setup), "alice@example.org", code)["Authentication"] == "OK"
    with setup.session() as session:
        stored = session.scalars(sa.select(DeliveryRecord)).one()
        attempt = session.scalars(sa.select(DeliveryAttempt)).one()
        assert stored.last_error == attempt.error == echo.replace(code, REDACTED)


def test_a_replaced_code_is_scrubbed_once_sent_and_the_newer_one_kept(setup: Database) -> None:
    first = requested_code(setup, "alice@example.org")
    with setup.session() as session:  # the first message went out
        session.scalars(sa.select(DeliveryRecord)).one().status = "delivered"
    second = requested_code(setup, "alice@example.org")
    older, newer = stored_params(setup)
    assert first not in older and REDACTED in older
    assert second in newer


def test_a_replaced_code_still_unsent_goes_out_as_written_and_no_longer_signs_in(
    setup: Database,
) -> None:
    first = requested_code(setup, "alice@example.org")
    second = requested_code(setup, "alice@example.org")
    older, newer = stored_params(setup)
    assert first in older and second in newer
    provider = provider_for(settings(), setup)
    if first != second:
        assert login(provider, "alice@example.org", first)["Authentication"] == "FAIL"
    assert login(provider, "alice@example.org", second)["Authentication"] == "OK"
    purge(setup, RetentionSettings(), now=datetime.now(UTC) + timedelta(hours=1))
    assert all(code not in text for text in stored_params(setup) for code in (first, second))


def test_expired_codes_are_scrubbed_and_removed_by_the_retention_purge(setup: Database) -> None:
    code = requested_code(setup, "alice@example.org")
    purge(setup, RetentionSettings(), now=datetime.now(UTC))
    assert code in stored_params(setup)[0]  # not expired yet
    purge(setup, RetentionSettings(), now=datetime.now(UTC) + timedelta(hours=1))
    assert code not in stored_params(setup)[0]
    with setup.session() as session:
        assert session.scalars(sa.select(SignInCode)).all() == []


def test_a_sign_in_code_message_is_never_sent_again(
    setup: Database, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    requested_code(setup, "alice@example.org")
    with setup.session() as session:
        delivery = session.scalars(sa.select(DeliveryRecord)).one()
        delivery.status = "delivered"
        delivery_id = delivery.id
    status, _out, err = Cli(base_env(database_url), capsys)("deliveries", "resend", str(delivery_id))
    assert status != 0 and "sign-in code" in err
    with setup.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DeliveryRecord)) == 1
        assert session.scalar(sa.text("SELECT count(*) FROM delivery_audit")) == 0
