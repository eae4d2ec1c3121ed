"""Opt-outs through the real worker and real channels: the Uniphore emulator and aiosmtpd.

A delivery to an address on the suppression list is recorded ``suppressed`` (no
attempt, never retried, nothing reaches the partner); ``otp`` channels are exempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from provider.comms import optouts
from provider.db.events import DELIVERED, SUPPRESSED, DeliveryAttempt
from provider.db.session import Database
from provider.events.worker import Worker
from tests.emulators.smtp import SmtpServer
from tests.emulators.uniphore import UniphoreEmulator
from tests.integration.test_worker_channel import Clock, deliveries, enqueue
from tests.integration.test_worker_partners import add, worker

EVENT_TYPE = 502000  # what enqueue() fires


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Workers made by the test; closed (their channels' connections too) afterwards."""
    made: list[Worker] = []
    yield made
    for w in made:
        w.close()


def sms_channel(database: Database, emulator: UniphoreEmulator, name: str = "sms", **extra: Any) -> None:
    add(
        database,
        name,
        "uniphore-sms",
        base_url=emulator.url,
        account_id=emulator.account_id,
        application_key="${SMS_APP_KEY}",
        environment=emulator.environment,
        **extra,
    )


def mail_channel(database: Database, smtp: SmtpServer, name: str = "mail", **extra: Any) -> None:
    add(
        database,
        name,
        "email",
        host=smtp.host,
        port=smtp.port,
        starttls=False,
        **{"from": "hd@example.org"},
        **extra,
    )


def sms(to: str) -> dict[str, Any]:
    return {"campaign": "campaign1", "to": to, "from": "+12121234567", "jp_token": "Aejhib7"}


def mail(to: Any) -> dict[str, Any]:
    return {"to": to, "subject": "Ticket", "text": "Your ticket"}


def opt_out(database: Database, address: str, **scope: Any) -> None:
    optouts.add(database, address, actor="test", command="test", **scope)


def attempt_count(database: Database) -> int:
    with database.session() as session:
        return len(list(session.scalars(select(DeliveryAttempt))))


def run(made: list[Worker], database: Database, clock: Clock, emulator: UniphoreEmulator) -> Worker:
    w = worker(made, database, clock, SMS_APP_KEY=emulator.application_key)
    w.drain()
    return w


def test_sms_opted_out_of_sms_is_suppressed_and_never_sent_or_retried(
    database: Database, uniphore_emulator: UniphoreEmulator, workers: list[Worker]
) -> None:
    clock = Clock()
    sms_channel(database, uniphore_emulator)
    opt_out(database, "+1 212 555 0100", kind="sms")
    opt_out(database, "+12125550199", kind="email")  # another kind: does not apply to SMS
    enqueue(database, clock.now, "sms", params=sms("+12125550100"))
    enqueue(database, clock.now, "sms", params=sms("12125550199"))  # written without +: still that number
    w = run(workers, database, clock, uniphore_emulator)
    first, second = deliveries(database)
    assert (first.status, first.attempts, first.finished_at) == (SUPPRESSED, 0, clock.now)
    assert "kind:sms" in (first.last_error or "")
    assert second.status == DELIVERED
    assert [m.caller_id for m in uniphore_emulator.messages] == ["12125550199"]
    assert attempt_count(database) == 1
    clock.advance(86_400)
    assert w.run_once() == 0  # a suppressed delivery is final: never claimed again


def test_opt_out_of_one_event_type_added_after_the_event_is_honoured_at_send_time(
    database: Database, smtp_server: SmtpServer, uniphore_emulator: UniphoreEmulator, workers: list[Worker]
) -> None:
    clock = Clock()
    mail_channel(database, smtp_server)
    enqueue(database, clock.now, "mail", params=mail("Ann@Example.org"))
    enqueue(database, clock.now, "mail", params=mail("bob@example.org"))
    opt_out(database, "ann@example.ORG", event_type=EVENT_TYPE)  # after the event was stored
    opt_out(database, "bob@example.org", event_type=EVENT_TYPE + 1)  # another event type
    run(workers, database, clock, uniphore_emulator)
    assert [d.status for d in deliveries(database)] == [SUPPRESSED, DELIVERED]
    assert [m.rcpt_tos for m in smtp_server.messages] == [["bob@example.org"]]


def test_email_to_several_goes_only_to_those_not_opted_out(
    database: Database, smtp_server: SmtpServer, uniphore_emulator: UniphoreEmulator, workers: list[Worker]
) -> None:
    clock = Clock()
    mail_channel(database, smtp_server)
    opt_out(database, "ann@example.org")
    enqueue(database, clock.now, "mail", params=mail(["ann@example.org", "bob@example.org"]))
    enqueue(database, clock.now, "mail", params=mail("ann@example.org, ANN@example.org"))
    run(workers, database, clock, uniphore_emulator)
    assert [d.status for d in deliveries(database)] == [DELIVERED, SUPPRESSED]
    assert [m.rcpt_tos for m in smtp_server.messages] == [["bob@example.org"]]


def test_otp_channels_are_exempt_and_promotional_ones_suppressed(
    database: Database, smtp_server: SmtpServer, uniphore_emulator: UniphoreEmulator, workers: list[Worker]
) -> None:
    clock = Clock()
    sms_channel(database, uniphore_emulator, "codes", category="otp")
    sms_channel(database, uniphore_emulator, "offers", category="promotional")
    mail_channel(database, smtp_server, "codes-mail", category="otp")
    opt_out(database, "+12125550100")
    opt_out(database, "ann@example.org")
    enqueue(database, clock.now, "codes", params=sms("+12125550100"))
    enqueue(database, clock.now, "offers", params=sms("+12125550100"))
    enqueue(database, clock.now, "codes-mail", params=mail("ann@example.org"))
    run(workers, database, clock, uniphore_emulator)
    assert [(d.channel, d.status) for d in deliveries(database)] == [
        ("codes", DELIVERED),
        ("offers", SUPPRESSED),
        ("codes-mail", DELIVERED),
    ]
    assert len(uniphore_emulator.messages) == 1
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ann@example.org"]]


def test_removing_an_opt_out_lets_queued_deliveries_go(
    database: Database, uniphore_emulator: UniphoreEmulator, workers: list[Worker]
) -> None:
    clock = Clock()
    sms_channel(database, uniphore_emulator)
    opt_out(database, "+12125550100", kind="sms")
    optouts.remove(database, "+12125550100", kind="sms", actor="test", command="test")
    enqueue(database, clock.now, "sms", params=sms("+12125550100"))
    run(workers, database, clock, uniphore_emulator)
    assert [d.status for d in deliveries(database)] == [DELIVERED]
