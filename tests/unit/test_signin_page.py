"""The ``/signin-code`` page through :class:`provider.app.ProviderApplication` (a real SQLite database).

Every POST answer is the same whatever the address; CSRF and the console's security headers;
the page pads its answer to a fixed minimum time (an injected clock and sleep).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from provider.app import ProviderApplication
from provider.auth.local import LocalAuthenticator, LocalUsers
from provider.calls import Provider
from provider.comms.signin_codes import SignInCodes
from provider.comms.signin_delivery import SignInCodeRequests
from provider.db.session import Database
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from provider.secret import Secret
from provider.settings import DEFAULT_NAMESPACE, OtpSettings
from provider.soap.router import SoapRouter
from provider.web.console.app import SECURITY_HEADERS
from provider.web.signin_code import NEUTRAL, build_signin_app

RULES = """\
channels:
  otp-mail: {type: email, host: smtp.example.org, from: portal@example.org, category: otp}
templates:
  otp-email: {kind: email, subject: "Your code", text: "{{ code }}"}
rules: []
"""
OTP = OtpSettings(enabled=True, channel_email="otp-mail", max_per_address=2)


class Timer:
    """A clock the page reads and a sleep that moves it (records what the page waited)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    RuleStore(database).import_rules(parse_rules(RULES), replace=True, actor="test", command="test")
    LocalUsers(database).add("alice", "alice-password-1", email="alice@example.org")
    yield database
    database.dispose()


def application(db: Database, timer: Timer, *, enabled: bool = True) -> ProviderApplication:
    requests = SignInCodeRequests(db, SignInCodes(db, OTP), finders=[LocalAuthenticator(db)])
    page = build_signin_app(requests, secret="s" * 32, clock=timer.clock, sleep=timer.sleep)
    router = SoapRouter(Provider(Secret("pw")).call, namespace=DEFAULT_NAMESPACE, max_body_bytes=65_536)
    return ProviderApplication(router, database=db, signin_code=page if enabled else None)


def token_of(response: TestResponse) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True))
    assert match is not None
    return match.group(1)


def post(client: Client, address: str, token: str | None) -> TestResponse:
    form: dict[str, Any] = {"address": address}
    if token is not None:
        form["csrf_token"] = token
    return client.post("/signin-code", data=form)


def test_the_form_has_a_labelled_field_a_token_and_the_console_headers(db: Database) -> None:
    client = Client(application(db, Timer()))
    response = client.get("/signin-code")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert '<label for="address">E-mail address or phone number</label>' in body
    assert "<script" not in body
    assert token_of(response)
    for name, value in SECURITY_HEADERS:
        assert response.headers[name] == value
    cookie = response.headers["Set-Cookie"]
    assert "st_signin=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/signin-code" in cookie
    assert client.get("/signin-code/").status_code == 200


def test_every_post_is_answered_alike(db: Database) -> None:
    client = Client(application(db, Timer()))
    token = token_of(client.get("/signin-code"))
    answers = [
        post(client, address, token)
        for address in (
            "alice@example.org",
            "nobody@example.org",
            "alice@example.org",
            "alice@example.org",
            "junk",
        )
    ]
    first = answers[0]
    assert first.status_code == 200 and NEUTRAL in first.get_data(as_text=True)
    for answer in answers[1:]:
        assert answer.status_code == first.status_code
        assert answer.get_data() == first.get_data()
        assert sorted(answer.headers.items()) == sorted(first.headers.items())


def test_a_post_without_the_right_token_is_refused(db: Database) -> None:
    client = Client(application(db, Timer()))
    token = token_of(client.get("/signin-code"))
    missing = post(client, "alice@example.org", None)
    wrong = post(client, "alice@example.org", token[:-2] + "xx")
    assert missing.status_code == wrong.status_code == 403
    assert NEUTRAL not in missing.get_data(as_text=True)
    for name, value in SECURITY_HEADERS:
        assert wrong.headers[name] == value
    stranger = Client(application(db, Timer()))  # a token without its session cookie
    assert post(stranger, "alice@example.org", token).status_code == 403


def test_the_answer_is_padded_to_the_minimum_time(db: Database) -> None:
    timer = Timer()
    client = Client(application(db, timer))
    token = token_of(client.get("/signin-code"))
    post(client, "nobody@example.org", token)
    assert timer.slept == [0.5]  # the injected clock did not move during the work


def test_off_means_not_found(db: Database) -> None:
    client = Client(application(db, Timer(), enabled=False))
    assert client.get("/signin-code").status_code == 404
    assert client.post("/signin-code", data={"address": "alice@example.org"}).status_code == 404
