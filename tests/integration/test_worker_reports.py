"""Reports on events and deliveries: the queries and the ``st-provider`` commands."""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
from datetime import timedelta

import pytest

from provider.channels.base import SendResult
from provider.cli import EXIT_BROKEN_PIPE, main
from provider.db.events import DELIVERED, FAILED, PENDING
from provider.db.session import Database
from provider.errors import ChannelError, DeliveryNotFound, ProviderError
from provider.events import manual, reports
from provider.events.reports import DeliveryFilter
from provider.events.worker import Worker
from provider.settings import Settings, WorkerSettings
from tests.integration.test_worker_channel import Clock, Partner, add_channel, deliveries, enqueue, http_error
from tests.support import REPO, base_env, run_cli


def build_history(database: Database) -> Clock:
    """Three events an hour apart: an SMS delivered, a webhook failed for good (403), a docgen pending."""
    clock = Clock()
    partner = Partner(clock=clock)
    for name in ("sms", "hook", "docgen"):
        add_channel(database, name)
    partner.script("sms", SendResult(partner_id="SM-1", status=200))
    partner.script("hook", ChannelError("forbidden: bad signature", status=403, final=True))
    partner.script("docgen", http_error(500))
    enqueue(database, clock.now, "sms", to="+15550001")
    clock.advance(3600)
    enqueue(database, clock.now, "hook", to="ops@example.org")
    clock.advance(3600)
    enqueue(database, clock.now, "docgen", to="+15550002")
    worker = Worker(
        Settings(worker=WorkerSettings()), database, channel_factory=partner.factory, clock=clock, name="w"
    )
    assert worker.run_once() == 3
    assert len(deliveries(database)) == 3
    return clock


@pytest.fixture
def history(database: Database) -> Clock:
    return build_history(database)


@pytest.fixture
def history_url(database_url: str) -> None:
    database = Database(database_url)
    try:
        build_history(database)
    finally:
        database.dispose()


def test_list_filters(database: Database, history: Clock) -> None:
    def ids(**kw: object) -> list[str]:
        return [r.channel for r in reports.list_deliveries(database, DeliveryFilter(**kw))]  # type: ignore[arg-type]

    assert ids() == ["docgen", "hook", "sms"]  # newest first
    assert ids(status=FAILED) == ["hook"]
    assert ids(status=DELIVERED) == ["sms"]
    assert ids(channel="docgen") == ["docgen"]
    assert ids(recipient="EXAMPLE.org") == ["hook"]
    assert ids(recipient="+1555000") == ["docgen", "sms"]
    assert ids(event_type=502000) == ["docgen", "hook", "sms"]
    assert ids(event_type=1) == []
    start = history.now - timedelta(hours=2)
    assert ids(since=start + timedelta(minutes=1)) == ["docgen", "hook"]
    assert ids(until=start + timedelta(minutes=1)) == ["sms"]
    first = reports.list_deliveries(database, DeliveryFilter(channel="sms"))[0]
    assert ids(event_id=first.event_id) == ["sms"]
    assert len(reports.list_deliveries(database, DeliveryFilter(), limit=2)) == 2
    with pytest.raises(ProviderError):
        reports.list_deliveries(database, DeliveryFilter(status="lost"))


def test_show_has_every_attempt(database: Database, history: Clock) -> None:
    [docgen] = reports.list_deliveries(database, DeliveryFilter(channel="docgen"))
    detail = reports.get_delivery(database, docgen.id)
    assert detail.delivery.status == PENDING
    assert detail.delivery.next_attempt_at == history.now + timedelta(seconds=5)
    assert detail.params["to"] == "+15550002"
    [attempt] = detail.attempts
    assert (attempt.outcome, attempt.http_status, attempt.worker) == ("retry", 500, "w")
    with pytest.raises(DeliveryNotFound):
        reports.get_delivery(database, 999_999)


def test_retry_rules(database: Database, history: Clock) -> None:
    [hook] = reports.list_deliveries(database, DeliveryFilter(channel="hook"))
    [sms] = reports.list_deliveries(database, DeliveryFilter(channel="sms"))
    with pytest.raises(ProviderError, match="only failed"):
        manual.retry_delivery(database, sms.id, actor="t", command="test")
    with pytest.raises(DeliveryNotFound):
        manual.retry_delivery(database, 999_999, actor="t", command="test")
    assert reports.retry_failed(database, channel="sms") == 0
    assert reports.retry_failed(database, channel="hook", now=history.now) == 1
    again = reports.get_delivery(database, hook.id).delivery
    assert (again.status, again.attempts, again.next_attempt_at) == (PENDING, 0, history.now)
    assert reports.retry_failed(database) == 0


def test_events_list_counts_deliveries(database: Database, history: Clock) -> None:
    rows = reports.list_events(database)
    assert [dict(r.deliveries) for r in rows] == [{"pending": 1}, {"failed": 1}, {"delivered": 1}]
    assert rows[0].event_name == "Ticket Created"
    assert reports.list_events(database, event_type=9) == []
    assert len(reports.list_events(database, since=history.now - timedelta(minutes=1))) == 1


def test_queue_stats(database: Database, history: Clock) -> None:
    stats = reports.queue_stats(database, history.now + timedelta(seconds=10))
    assert stats.counts == {"pending": 1, "sending": 0, "delivered": 1, "failed": 1, "suppressed": 0}
    assert stats.oldest_pending_seconds == 10


class Cli:
    """Runs ``st-provider`` commands in this process (the real parser, settings and handlers)."""

    def __init__(self, env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        self.env = env
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level  # main() configures logging for a process
        try:
            code = main(list(args), environ=self.env)
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        out, err = self.capsys.readouterr()
        return code, out, err


def test_cli_reports(database_url: str, history_url: None, capsys: pytest.CaptureFixture[str]) -> None:
    cli = Cli(base_env(database_url), capsys)
    code, out, err = cli("deliveries", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "EVENT", "TYPE", "CHANNEL"]
    assert len(lines) == 4
    assert "forbidden: bad signature" in out

    code, out, _ = cli("deliveries", "list", "--status", "failed", "--format", "json")
    [failed] = json.loads(out)
    assert (failed["channel"], failed["status"], failed["last_status"]) == ("hook", "failed", 403)

    _, out, _ = cli("deliveries", "list", "--recipient", "+1555", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["channel"] for r in rows] == ["docgen", "sms"]
    assert rows[1]["partner_id"] == "SM-1"

    _, out, _ = cli(
        "deliveries", "list", "--since", "2024-05-01T12:30:00", "--until", "2024-05-01", "--format", "json"
    )
    assert [r["channel"] for r in json.loads(out)] == ["docgen", "hook"]

    code, out, err = cli("deliveries", "show", str(failed["id"]))
    assert code == 0, err
    assert "forbidden: bad signature" in out and "OUTCOME" in out
    _, out, _ = cli("deliveries", "show", str(failed["id"]), "--format", "json")
    assert [a["outcome"] for a in json.loads(out)["attempts"]] == ["failed"]

    code, _, err = cli("deliveries", "show", "424242")
    assert code == 1
    assert "no delivery has id 424242" in err

    code, _, _ = cli("deliveries", "retry")
    assert code == 1
    code, out, err = cli("deliveries", "retry", "--failed", "--channel", "hook")
    assert code == 0, err
    assert out.startswith("1 ")
    code, out, err = cli("deliveries", "retry", str(failed["id"]))  # pending now: due at once
    assert (code, out) == (0, f"delivery {failed['id']} queued again\n"), err
    delivered = json.loads(cli("deliveries", "list", "--status", "delivered", "--format", "json")[1])[0]
    code, _, err = cli("deliveries", "retry", str(delivered["id"]))
    assert code == 1
    assert "only failed or pending deliveries" in err

    _, out, _ = cli("events", "list", "--format", "json")
    assert [e["deliveries"] for e in json.loads(out)] == [{"pending": 1}, {"pending": 1}, {"delivered": 1}]
    _, out, _ = cli("events", "list")
    assert out.splitlines()[0].split()[:3] == ["ID", "RECEIVED", "TYPE"]
    code, _, _ = cli("events", "list", "--since", "yesterday")
    assert code == 2


@pytest.mark.e2e
def test_cli_as_a_process(sqlite_url: str) -> None:
    database = Database(sqlite_url)
    try:
        build_history(database)
    finally:
        database.dispose()
    result = run_cli(["deliveries", "list", "--format", "json"], base_env(sqlite_url))
    assert result.returncode == 0, result.stderr
    assert {r["status"] for r in json.loads(result.stdout)} == {"delivered", "failed", "pending"}


def test_times_carry_their_zone_in_every_format(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database(sqlite_url)
    try:
        build_history(database)
    finally:
        database.dispose()
    cli = Cli(base_env(sqlite_url), capsys)

    _, table, _ = cli("deliveries", "list")
    _, as_json, _ = cli("deliveries", "list", "--format", "json")
    _, as_csv, _ = cli("deliveries", "list", "--format", "csv")
    _, shown, _ = cli("deliveries", "show", "1")

    created = [row["created_at"] for row in json.loads(as_json)]
    assert created and all(c.endswith("Z") for c in created)
    assert [r["created_at"] for r in csv.DictReader(io.StringIO(as_csv))] == created
    first_row = table.splitlines()[1]
    assert created[0][:19] + "Z" in first_row  # the table: to the second
    [shown_created] = [line.split()[-1] for line in shown.splitlines() if line.startswith("Created ")]
    assert shown_created.endswith("Z")


@pytest.mark.e2e
def test_output_to_a_closed_pipe_ends_quietly(sqlite_url: str) -> None:
    database = Database(sqlite_url)
    try:
        build_history(database)
    finally:
        database.dispose()
    process = subprocess.Popen(
        [sys.executable, "-m", "provider.cli", "deliveries", "list"],
        env=base_env(sqlite_url),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # `| head -0`: the reader is gone before the first line is written
    with process.stderr:
        stderr = process.stderr.read().decode()
    code = process.wait(timeout=60)

    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert code == EXIT_BROKEN_PIPE
