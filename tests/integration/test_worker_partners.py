"""The worker with the real channels (built by the registry) against the partner emulators."""

from __future__ import annotations

import base64
from datetime import timedelta

from sqlalchemy import select

from provider.db.events import DELIVERED, FAILED, PENDING, ChannelState, DeliveryAttempt
from provider.db.rules import ChannelRecord
from provider.db.session import Database
from provider.events.worker import Worker
from provider.settings import Settings, WorkerSettings
from tests.emulators.smartcomm import GENERATE_PATH, SmartCommEmulator
from tests.emulators.uniphore import UniphoreEmulator
from tests.integration.test_worker_channel import Clock, deliveries, enqueue

SECRET = "smartcomm-client-secret"
DATA = {"Customer": {"name": "Ann Lee", "ticket": 1042}}


def add(database: Database, name: str, type_name: str, **settings: object) -> None:
    with database.session() as session:
        now = Clock().now
        session.add(
            ChannelRecord(
                name=name, type=type_name, settings=settings, enabled=True, created_at=now, updated_at=now
            )
        )


def worker(made: list[Worker], database: Database, clock: Clock, **env: str) -> Worker:
    """A worker with ``env`` as its environment, added to ``made`` (the ``workers`` fixture)."""
    w = Worker(Settings(worker=WorkerSettings(http_timeout=5), environment=env), database, clock=clock)
    made.append(w)
    return w


def uniphore_sms(database: Database, emulator: UniphoreEmulator) -> None:
    """Store the channel ``sms`` to ``emulator``; its application key is ``${SMS_APP_KEY}``."""
    add(
        database,
        "sms",
        "uniphore-sms",
        base_url=emulator.url,
        account_id=emulator.account_id,
        application_key="${SMS_APP_KEY}",
        environment=emulator.environment,
    )


def smartcomm(database: Database, emulator: SmartCommEmulator) -> None:
    add(
        database,
        "docgen",
        "smartcomm",
        base_url=emulator.url,
        token_url=emulator.token_url,
        client_id=emulator.client_id,
        client_secret="${SMARTCOMM_SECRET}",
        batch_config_res_id=5001,
    )


def attempts(database: Database) -> list[DeliveryAttempt]:
    with database.session() as session:
        return list(session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))


def test_smartcomm_429_pauses_60_seconds_then_documents_are_kept(
    database: Database, smartcomm_emulator: SmartCommEmulator, workers: list[Worker]
) -> None:
    clock = Clock()
    smartcomm(database, smartcomm_emulator)
    smartcomm_emulator.script(429, path=GENERATE_PATH)
    enqueue(database, clock.now, "docgen", params={"data": DATA})
    w = worker(workers, database, clock, SMARTCOMM_SECRET=SECRET)
    assert w.run_once() == 1
    [d] = deliveries(database)
    assert (d.status, d.last_status, d.next_attempt_at) == (PENDING, 429, clock.now + timedelta(seconds=60))
    with database.session() as session:
        state = session.get(ChannelState, "docgen")
        assert state is not None and state.paused_until == clock.now + timedelta(seconds=60)
    clock.advance(59)
    assert w.run_once() == 0
    clock.advance(1)
    assert w.run_once() == 1
    [d] = deliveries(database)
    assert d.status == DELIVERED
    assert d.documents is not None
    [document] = d.documents["documents"]
    assert base64.b64decode(document["data"]).startswith(b"Document 1 of batch 5001")


def test_smartcomm_403_is_final_with_its_id_and_message(
    database: Database, smartcomm_emulator: SmartCommEmulator, workers: list[Worker]
) -> None:
    clock = Clock()
    smartcomm(database, smartcomm_emulator)
    smartcomm_emulator.script(403, path=GENERATE_PATH)
    enqueue(database, clock.now, "docgen", params={"data": DATA})
    worker(workers, database, clock, SMARTCOMM_SECRET=SECRET).run_once()
    [d] = deliveries(database)
    assert (d.status, d.last_status) == (FAILED, 403)
    assert d.last_error is not None
    assert "3010" in d.last_error and "Generate Document has failed" in d.last_error


def test_wrong_credentials_are_recorded_without_the_secret(
    database: Database, smartcomm_emulator: SmartCommEmulator, workers: list[Worker]
) -> None:
    clock = Clock()
    smartcomm(database, smartcomm_emulator)
    enqueue(database, clock.now, "docgen", params={"data": DATA})
    worker(workers, database, clock, SMARTCOMM_SECRET="wrong-secret-value").run_once()
    [d] = deliveries(database)
    assert d.status in (PENDING, FAILED)
    assert d.last_status == 401
    for text in [d.last_error or "", *(a.error or "" for a in attempts(database))]:
        assert "wrong-secret-value" not in text
        assert SECRET not in text


def test_sms_message_sid_is_the_partner_id(
    database: Database, uniphore_emulator: UniphoreEmulator, workers: list[Worker]
) -> None:
    clock = Clock()
    uniphore_sms(database, uniphore_emulator)
    sms = {"campaign": "campaign1", "to": "+12125550100", "from": "+12121234567", "jp_token": "Aejhib7"}
    enqueue(database, clock.now, "sms", params=sms)
    worker(workers, database, clock, SMS_APP_KEY=uniphore_emulator.application_key).run_once()
    [d] = deliveries(database)
    assert d.status == DELIVERED
    assert d.partner_id
    [a] = attempts(database)
    assert (a.partner_id, a.http_status) == (d.partner_id, 200)
    [message] = uniphore_emulator.messages
    assert message.message_sid == d.partner_id
