"""``st-provider optout`` and ``deliveries summary``/``list --kind --suppressed`` as real processes."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from sqlalchemy import select, update

from provider.db.comms import OptOutAudit
from provider.db.events import DELIVERED, FAILED, SUPPRESSED, DeliveryRecord
from provider.db.rules import ChannelRecord
from provider.db.session import Database
from tests.integration.test_worker_channel import enqueue
from tests.support import base_env, run_cli

DAY1 = datetime(2024, 5, 1, 23, 59, tzinfo=UTC)
DAY2 = datetime(2024, 5, 2, 0, 1, tzinfo=UTC)


def test_add_list_remove_audited_with_the_actor(database_url: str, database: Database) -> None:
    env = base_env(database_url, SUDO_USER="carol")
    added = run_cli(["optout", "add", "+44 20 7946 0018", "--kind", "sms", "--reason", "asked by phone"], env)
    assert added.returncode == 0, added.stderr
    assert "+442079460018 (kind:sms)" in added.stdout
    assert (
        run_cli(["optout", "add", "Ann@Example.ORG", "--event-type", "7", "--actor", "dave"], env).returncode
        == 0
    )
    again = run_cli(["optout", "add", "0044 20-7946-0018", "--kind", "sms"], env)
    assert again.returncode == 1
    assert "already opted out" in again.stderr
    bad = run_cli(["optout", "add", "020 7946 0018"], env)  # no country code: refused, not guessed
    assert bad.returncode == 1
    assert "country code" in bad.stderr
    both = run_cli(["optout", "add", "+442079460018", "--kind", "sms", "--event-type", "7"], env)
    assert both.returncode == 2

    listed = run_cli(["optout", "list", "--format", "json"], env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["address"], r["scope"], r["reason"]) for r in rows] == [
        ("+442079460018", "kind:sms", "asked by phone"),
        ("ann@example.org", "event:7", None),
    ]
    assert rows[0]["actor"].startswith("carol@")
    assert rows[1]["actor"] == "dave"
    only = run_cli(["optout", "list", "ANN@example.org"], env)
    assert "ann@example.org" in only.stdout
    assert "+442079460018" not in only.stdout

    removed = run_cli(["optout", "remove", "+442079460018", "--kind", "sms"], env)
    assert removed.returncode == 0, removed.stderr
    assert run_cli(["optout", "remove", "+442079460018", "--kind", "sms"], env).returncode == 1
    with database.session() as session:
        audit = [
            (a.action, a.address, a.scope)
            for a in session.scalars(select(OptOutAudit).order_by(OptOutAudit.id))
        ]
    assert audit == [
        ("add", "+442079460018", "kind:sms"),
        ("add", "ann@example.org", "event:7"),
        ("remove", "+442079460018", "kind:sms"),
    ]


def _deliveries(database: Database) -> None:
    """Two days of deliveries: sms (uniphore) delivered, failed, suppressed; mail delivered."""
    now = datetime.now(UTC)
    with database.session() as session:
        for name, type_name in (("sms", "uniphore-sms"), ("mail", "email")):
            session.add(
                ChannelRecord(
                    name=name, type=type_name, settings={}, enabled=True, created_at=now, updated_at=now
                )
            )
    plan = [
        ("sms", DAY1, DELIVERED),
        ("sms", DAY1, FAILED),
        ("sms", DAY2, SUPPRESSED),
        ("mail", DAY2, DELIVERED),
    ]
    for channel, at, status in plan:
        accepted = enqueue(database, at, channel)
        with database.session() as session:
            session.execute(
                update(DeliveryRecord)
                .where(DeliveryRecord.event_id == accepted.event_id)
                .values(status=status)
            )


def test_summary_by_channel_status_and_day(database_url: str, database: Database) -> None:
    _deliveries(database)
    env = base_env(database_url)
    by_channel = run_cli(["deliveries", "summary", "--format", "json"], env)
    assert by_channel.returncode == 0, by_channel.stderr
    assert [
        (r["group"], r["total"], r["delivered"], r["failed"], r["suppressed"], r["failure_rate"])
        for r in json.loads(by_channel.stdout)
    ] == [
        ("mail", 1, 1, 0, 0, 0.0),
        ("sms", 3, 1, 1, 1, 0.5),
    ]
    by_day = run_cli(["deliveries", "summary", "--by", "day", "--format", "csv"], env)
    assert by_day.returncode == 0, by_day.stderr
    rows = list(csv.DictReader(io.StringIO(by_day.stdout)))
    assert [(r["group"], r["total"], r["failure_rate"]) for r in rows] == [
        ("2024-05-01", "2", "0.5"),
        ("2024-05-02", "2", "0.0"),
    ]
    since = run_cli(["deliveries", "summary", "--by", "status", "--since", "2024-05-02"], env)
    assert since.returncode == 0, since.stderr
    lines = since.stdout.splitlines()
    assert lines[0].split() == [
        "GROUP",
        "TOTAL",
        "DELIVERED",
        "FAILED",
        "SUPPRESSED",
        "PENDING",
        "FAILURE",
        "RATE",
    ]
    assert [line.split()[:2] for line in lines[1:]] == [["delivered", "1"], ["suppressed", "1"]]

    suppressed = run_cli(["deliveries", "list", "--suppressed", "--format", "json"], env)
    assert [(r["channel"], r["status"]) for r in json.loads(suppressed.stdout)] == [("sms", SUPPRESSED)]
    email = run_cli(["deliveries", "list", "--kind", "email", "--format", "json"], env)
    assert [r["channel"] for r in json.loads(email.stdout)] == ["mail"]
    sms = run_cli(["deliveries", "list", "--kind", "sms", "--status", "failed", "--format", "json"], env)
    assert [r["status"] for r in json.loads(sms.stdout)] == [FAILED]
    docgen = run_cli(["deliveries", "list", "--kind", "docgen"], env)
    assert docgen.stdout.strip() == "(none)"
