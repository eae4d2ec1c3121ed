"""Sign-in codes: from ``POST /signin-code`` to the code at the partner, beside event delivery.

Usage::

    python benchmarks/signin_code_latency.py [--samples N] [--poll-interval S]
                                             [--database-url URL] [--json]

One ``st-provider serve`` (2 gunicorn workers and its embedded delivery worker) with
``ST_PROVIDER_OTP=on``, its SMS codes going through a webhook channel (``category: otp``) to
the test suite's webhook receiver (``tests/emulators/webhook.py``) running in this process,
which notes when each request arrives. Samples alternate, one at a time:

* **sign-in code**: a customer's browser posts a phone number (a new one per sample, allowed
  by a ``RequestSignInCode`` rule) to ``/signin-code``; measured from the start of the POST
  to the code's arrival at the receiver;
* **baseline**: ``NotifyEventFired`` (real SOAP) whose rule notifies the same kind of webhook
  channel; measured from the start of the call to the delivery's arrival.

Each sample starts after a random pause of up to a second, so samples do not fall into step
with the worker's polls. Both go through the same outbox and the same worker, so their ratio shows what the code path
adds (its own lookups, rendering, the outbox transaction) beside the delivery mechanism itself
(the worker's wake-up: ``ST_PROVIDER_WORKER_POLL_INTERVAL``, or instant wake-ups where the
worker has them). The goal of issue 13 is a code at the partner within 1 s at p95.

It also prints how long ``POST /signin-code`` itself takes for an address that gets a code and
for one that does not (no rule allows it): the page pads both to the same minimum, so the two
rows should match.

Exit status 0 when measured (nothing is asserted), 2 when a process did not start or a sample
was lost. With the defaults the run takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (  # the benchmarks directory is not a package
    import_rules,
    percentile,
    provider_env,
    provider_server,
)

from provider.db.migrate import upgrade
from provider.domain import Operation
from provider.soap.client import call_operation
from tests.emulators.base import Reply, Request
from tests.emulators.webhook import WebhookReceiver

PASSWORD = "bench-ws-password"
NAMESPACE = "http://tempuri.org/"
WAIT_SECONDS = 30.0
#: A random pause (up to this) before each sample, so samples do not lock onto the worker's polls.
JITTER_SECONDS = 1.0
RULES = """\
channels:
  otp-sms: {{type: webhook, url: "{url}/sms", category: otp, timeout: 30}}
  hook: {{type: webhook, url: "{url}/events", timeout: 30}}
templates:
  otp-sms:
    kind: webhook
    body: {{to: "{{{{ user.address }}}}", text: "Your code is {{{{ code }}}}"}}
rules:
  - name: bench-customers
    method: RequestSignInCode
    when: "username.startswith('+1555')"
    then: {{stop: true}}
  - name: every-ticket-event
    method: NotifyEventFired
    when: "eventType == 502000"
    then:
      notify:
        - channel: hook
          body: {{ticket: "{{{{ args.ticketNumber }}}}"}}
"""


class ArrivalRecorder(WebhookReceiver):
    """The webhook receiver, noting when each message arrived, by its phone number or ticket."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: dict[str, float] = {}
        self.arrived = threading.Condition()

    def handle(self, request: Request) -> Reply:
        now = time.perf_counter()
        reply = super().handle(request)
        body = json.loads(request.body or b"{}")
        key = str(body.get("to") or body.get("ticket") or "")
        with self.arrived:
            self.arrivals[key] = now
            self.arrived.notify_all()
        return reply

    def wait_for(self, key: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while key not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.arrived.wait(left)
            return self.arrivals[key]


class Customer:
    """A browser on ``/signin-code``: its cookie and CSRF token, fetched once."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=30)
        match = re.search(r'name="csrf_token" value="([^"]+)"', self.client.get("/signin-code").text)
        if match is None:
            raise RuntimeError("the sign-in code page has no form")
        self.token = match.group(1)

    def ask(self, address: str) -> float:
        """Post ``address``; the seconds the answer took."""
        started = time.perf_counter()
        answer = self.client.post("/signin-code", data={"address": address, "csrf_token": self.token})
        answer.raise_for_status()
        return time.perf_counter() - started


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p95_ms": round(percentile(values, 95) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    database_url = args.database_url or f"sqlite:///{workdir / 'provider.db'}"
    upgrade(database_url)
    extra = {
        "ST_PROVIDER_OTP": "on",
        "ST_PROVIDER_OTP_CHANNEL_SMS": "otp-sms",
        "ST_PROVIDER_OTP_MAX_PER_CLIENT": "100000",
        "ST_PROVIDER_SESSION_SECRET": "b" * 40,
        "ST_PROVIDER_JOURNAL": "off",
    }
    if args.poll_interval is not None:
        extra["ST_PROVIDER_WORKER_POLL_INTERVAL"] = str(args.poll_interval)
    env = provider_env(PASSWORD, database_url, **extra)
    receiver = ArrivalRecorder()
    receiver.start()
    try:
        rules = workdir / "rules.yaml"
        rules.write_text(RULES.format(url=receiver.url), encoding="utf-8")
        import_rules(env, rules, replace=True)
        with provider_server(env, workdir / "server.log", workers=2, no_worker=False) as server:
            result = run_samples(args.samples, server.url, server.endpoint, receiver)
            if result["lost"]:
                print((workdir / "server.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            return result
    finally:
        receiver.stop()


def run_samples(samples: int, base: str, endpoint: str, receiver: ArrivalRecorder) -> dict[str, Any]:
    customer = Customer(base)
    code_latency: list[float] = []
    event_latency: list[float] = []
    known_post: list[float] = []
    unknown_post: list[float] = []
    lost = 0
    jitter = random.Random(13)
    for i in range(samples):
        phone = f"+1555{i:07d}"
        time.sleep(jitter.uniform(0, JITTER_SECONDS))
        started = time.perf_counter()
        known_post.append(customer.ask(phone))
        arrived = receiver.wait_for(phone, WAIT_SECONDS)
        if arrived is None:
            print(f"lost: the code for {phone}", file=sys.stderr)
            lost += 1
        else:
            code_latency.append(arrived - started)
        unknown_post.append(customer.ask(f"+1666{i:07d}"))
        ticket = f"T-{i}"
        time.sleep(jitter.uniform(0, JITTER_SECONDS))
        started = time.perf_counter()
        call_operation(
            endpoint,
            Operation.NOTIFY_EVENT_FIRED,
            [f"authPW={PASSWORD}", "eventType=502000", f"args_ticketNumber={ticket}"],
            namespace=NAMESPACE,
            timeout=30,
        )
        arrived = receiver.wait_for(ticket, WAIT_SECONDS)
        if arrived is None:
            print(f"lost: the delivery of {ticket}", file=sys.stderr)
            lost += 1
        else:
            event_latency.append(arrived - started)
    if not code_latency or not event_latency:
        raise RuntimeError("no sample arrived at the partner")
    code, event = summary(code_latency), summary(event_latency)
    return {
        "samples": samples,
        "lost": lost,
        "code_to_partner": code,
        "event_to_partner_baseline": event,
        "ratio_p50": round(code["p50_ms"] / event["p50_ms"], 2) if event["p50_ms"] else None,
        "ratio_p95": round(code["p95_ms"] / event["p95_ms"], 2) if event["p95_ms"] else None,
        "post_known_address": summary(known_post),
        "post_unknown_address": summary(unknown_post),
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['samples']} samples each, {result['lost']} lost")
    print(f"{'case':<40} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for label, key in (
        ("POST /signin-code -> code at partner", "code_to_partner"),
        ("NotifyEventFired -> delivery (baseline)", "event_to_partner_baseline"),
        ("POST /signin-code answer, known", "post_known_address"),
        ("POST /signin-code answer, unknown", "post_unknown_address"),
    ):
        row = result[key]
        print(f"{label:<40} {row['p50_ms']:>9} {row['p95_ms']:>9} {row['max_ms']:>9}")
    print(f"ratio code / baseline: p50 {result['ratio_p50']}, p95 {result['ratio_p95']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=30, help="samples of each kind (default 30)")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="ST_PROVIDER_WORKER_POLL_INTERVAL (default: serve's)",
    )
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: a new SQLite file)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="st-bench-otp-") as tmp:
        try:
            result = measure(args, Path(tmp))
        except RuntimeError as exc:
            print(f"signin_code_latency: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0 if result["lost"] == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
