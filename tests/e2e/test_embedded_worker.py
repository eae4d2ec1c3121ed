"""`st-provider serve` without --no-worker delivers events itself, and keeps its worker alive."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import zeep
from zeep.transports import Transport

from tests.emulators.webhook import WebhookReceiver
from tests.support import WEB_SERVICE_PASSWORD, ServerProcess, base_env, run_cli, serve, wait_until

pytestmark = pytest.mark.e2e

RULES = """\
channels:
  hook:
    type: webhook
    url: {url}/events
    secret: ${{HOOK_SECRET}}
rules:
  - name: tickets
    method: NotifyEventFired
    then:
      notify:
        - channel: hook
          body: {{ticket: "{{{{ args.ticketNumber }}}}"}}
"""


def events(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    found = []
    for line in server.log().splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            found.append(json.loads(line))
    return found


def fire(server: ServerProcess, ticket: str) -> bool:
    client = zeep.Client(f"{server.endpoint}?wsdl", transport=Transport(timeout=30, operation_timeout=30))
    entries = [f"authPW={WEB_SERVICE_PASSWORD}", "eventType=502000", f"args_ticketNumber={ticket}"]
    return bool(client.service.NotifyEventFired(inputs={"InputVariables": {"string": entries}}).Success)


def delivered(env: dict[str, str]) -> int:
    listed = run_cli(["deliveries", "list", "--status", "delivered", "--format", "json"], env)
    assert listed.returncode == 0, listed.stderr
    return len(json.loads(listed.stdout))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_runs_a_supervised_delivery_worker(
    sqlite_url: str, webhook_receiver: WebhookReceiver, tmp_path: Path
) -> None:
    env = base_env(
        sqlite_url,
        HOOK_SECRET="webhook-secret",
        ST_PROVIDER_LOG_FORMAT="json",
        ST_PROVIDER_WORKER_POLL_INTERVAL="0.1",
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=webhook_receiver.url), encoding="utf-8")
    imported = run_cli(["rules", "import", str(rules)], env)
    assert imported.returncode == 0, imported.stderr

    with serve(env, tmp_path / "server.log", workers=1) as server:
        assert fire(server, "T-1")
        wait_until(
            lambda: delivered(env) == 1, 60, "the first delivery recorded"
        )  # recorded: killing the worker now loses nothing
        assert len(webhook_receiver.deliveries) == 1
        [started] = events(server, "server.worker_started")

        # A crashed delivery worker is started again and goes on delivering.
        os.kill(started["pid"], signal.SIGKILL)
        wait_until(lambda: len(events(server, "server.worker_started")) == 2, 60, "the worker restarted")
        [exited] = events(server, "server.worker_exited")
        assert (exited["pid"], exited["returncode"]) == (started["pid"], -signal.SIGKILL)
        assert fire(server, "T-2")
        wait_until(lambda: len(webhook_receiver.deliveries) == 2, 60, "the second delivery")
        worker_pid = events(server, "server.worker_started")[-1]["pid"]
        # The worker shares the server's metrics directory: its counters show on /metrics
        # (only a worker delivers, so the series exists only if the directory is shared).
        series = 'st_provider_deliveries_total{channel="hook",outcome="delivered"}'
        wait_until(lambda: series in httpx.get(f"{server.url}/metrics", timeout=10).text, 20, "the series")

    assert sorted(d["ticket"] for d in webhook_receiver.deliveries) == ["T-1", "T-2"]
    # Stopping the server stops its worker too.
    assert server.process.returncode == 0
    wait_until(lambda: not alive(worker_pid), 10, "the worker to stop")


def test_no_worker_flag_runs_none(sqlite_url: str, webhook_receiver: WebhookReceiver, tmp_path: Path) -> None:
    env = base_env(sqlite_url, HOOK_SECRET="webhook-secret", ST_PROVIDER_LOG_FORMAT="json")
    rules = tmp_path / "rules.yaml"
    unset = "  pager:\n    type: webhook\n    url: https://pager.example.org/x\n    secret: ${PAGER_SECRET}\n"
    text = RULES.format(url=webhook_receiver.url).replace("rules:\n", unset + "rules:\n", 1)
    rules.write_text(text, encoding="utf-8")
    assert run_cli(["rules", "import", str(rules)], env).returncode == 0
    with serve(env, tmp_path / "server.log", workers=1, extra_args=("--no-worker",)) as server:
        assert fire(server, "T-9")
        assert events(server, "server.worker_started") == []
        # serve names, at start, each channel whose ${VAR} is not set (issue 9 item 5)
        warned = [(e["channel"], e["variable"]) for e in events(server, "channels.variable_missing")]
        assert warned == [("pager", "PAGER_SECRET")]
        # With no worker anywhere, a scrape still shows the queue from the database.
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'st_provider_queue_depth{status="pending"} 1.0' in metrics
    listed = run_cli(["deliveries", "list", "--format", "json"], env)
    assert listed.returncode == 0, listed.stderr
    assert [d["status"] for d in json.loads(listed.stdout)] == ["pending"]
    assert webhook_receiver.received == []
