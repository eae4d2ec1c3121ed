"""A SOAP web worker imports no partner client (issue 10): channels are built only by the worker.

The application is built the way a gunicorn worker builds it (database, domain provider,
rules store) in a fresh interpreter, a rules file with channels and ``notify`` entries is
validated, and ``sys.modules`` must hold none of zeep, httpx, smtplib or the channel
implementations. Building a channel imports its implementation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import REPO, WEB_SERVICE_PASSWORD

CLIENTS = ("zeep", "httpx", "smtplib", "provider.channels.impl")

PROBE = """
import json, sys
from provider.app import build_application
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from provider.settings import Settings

settings = Settings.from_mapping({"web_service_password": sys.argv[1], "database_url": sys.argv[2]})
app = build_application(settings)
parse_rules('''
channels:
  sms: {type: uniphore-sms, base_url: "https://sms.example.org", account_id: a, application_key: "${K}"}
  doc: {type: smartcomm, base_url: "https://c.example.org", token_url: "https://c.example.org/t",
        client_id: c, client_secret: "${S}", retry_waits: {429: 60}}
  mail: {type: email, host: smtp.example.org, from: a@example.org}
rules:
  - name: r
    method: NotifyEventFired
    then:
      notify:
        - {channel: sms, campaign: c, to: "1", params: "a={{ eventName }}&b=2"}
        - {channel: doc, data: {x: 1}}
        - {channel: mail, to: b@example.org, subject: s, text: t}
''')
assert RuleStore is not None
loaded = [name for name in sys.argv[3:] if name in sys.modules]
print(json.dumps(loaded))
"""

BUILD = """
import json, sys
from provider.channels.registry import build_channel
channel = build_channel(
    "mail", "email", {"host": "smtp.example.org", "from": "a@example.org"}, environment={}, timeout=5.0
)
channel.close()
print(json.dumps([name for name in sys.argv[1:] if name in sys.modules]))
"""


def _run(code: str, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_a_web_worker_imports_no_partner_client(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'web.db'}"
    assert _run(PROBE, WEB_SERVICE_PASSWORD, database_url, *CLIENTS) == []


def test_building_a_channel_imports_its_implementation() -> None:
    loaded = _run(BUILD, *CLIENTS)
    assert "smtplib" in loaded and "provider.channels.impl" in loaded
    assert "zeep" not in loaded  # only the SMS channel's SOAP transport needs it
