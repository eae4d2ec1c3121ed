"""The email channel against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from provider.channels.base import Channel
from provider.channels.registry import build_channel
from provider.errors import ChannelError, ConfigError
from tests.emulators.smtp import SmtpServer
from tests.emulators.tls import TlsFiles
from tests.support import free_port

MAIL = {
    "to": ["Ann Lee <ann@example.org>", "bob@example.org"],
    "subject": "Ticket ABC-1042 created",
    "text": "Your ticket ABC-1042 was created.",
    "html": "<p>Your ticket <b>ABC-1042</b> was created.</p>",
}
USER, PASSWORD = "notifier", "smtp-password-77"


def make_channel(
    host: str, port: int, *, timeout: float = 5.0, secret: str = PASSWORD, **extra: Any
) -> Channel:
    settings = {
        "host": host,
        "port": port,
        "from": "SmarterTrack <helpdesk@example.org>",
        "starttls": False,
        **extra,
    }
    return build_channel("mail", "email", settings, environment={"SMTP_PASSWORD": secret}, timeout=timeout)


@pytest.fixture
def channel(smtp_server: SmtpServer) -> Iterator[Channel]:
    ch = make_channel(smtp_server.host, smtp_server.port)
    yield ch
    ch.close()


@pytest.fixture
def tls_server(tls_files: TlsFiles) -> Iterator[SmtpServer]:
    server = SmtpServer(
        username=USER, password=PASSWORD, tls=tls_files.server_context(), require_starttls=True
    ).start()
    yield server
    server.stop()


def send_error(channel: Channel, params: dict[str, Any] | None = None) -> ChannelError:
    with pytest.raises(ChannelError) as info:
        channel.send(params if params is not None else MAIL, delivery_key="d-1")
    return info.value


def test_sends_a_multipart_message(channel: Channel, smtp_server: SmtpServer) -> None:
    result = channel.send(
        {**MAIL, "cc": "carol@example.org", "bcc": ["audit@example.org"]}, delivery_key="dl-9"
    )

    [mail] = smtp_server.messages
    assert mail.mail_from == "helpdesk@example.org"
    assert mail.rcpt_tos == ["ann@example.org", "bob@example.org", "carol@example.org", "audit@example.org"]
    message = mail.message
    assert message["Subject"] == "Ticket ABC-1042 created"
    assert message["To"] == "ann@example.org, bob@example.org"
    assert message["Cc"] == "carol@example.org"
    assert "Bcc" not in message
    assert message["Message-ID"] == "<dl-9@st-provider>" == result.partner_id
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and "ABC-1042 was created" in plain.get_content()
    assert html is not None and "<b>ABC-1042</b>" in html.get_content()


def test_text_only_message(channel: Channel, smtp_server: SmtpServer) -> None:
    channel.send({"to": ["ann@example.org"], "subject": "Hi", "text": "Plain"}, delivery_key="d")

    [mail] = smtp_server.messages
    assert mail.message.get_content_type() == "text/plain"


def test_starttls_and_login_with_a_verified_certificate(tls_server: SmtpServer, tls_files: TlsFiles) -> None:
    channel = make_channel(
        tls_server.host,
        tls_server.port,
        starttls=True,
        username=USER,
        password="${SMTP_PASSWORD}",
        ca_file=str(tls_files.ca_file),
    )
    try:
        channel.send(MAIL, delivery_key="d")
    finally:
        channel.close()

    [mail] = tls_server.messages
    assert mail.tls
    assert mail.authenticated_as == USER


def test_untrusted_certificate_is_final(tls_server: SmtpServer) -> None:
    channel = make_channel(
        tls_server.host, tls_server.port, starttls=True, username=USER, password="${SMTP_PASSWORD}"
    )
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.final, error.partner_code) == (True, "tls")
    assert tls_server.messages == []


def test_wrong_password_is_final_and_never_shown(tls_server: SmtpServer, tls_files: TlsFiles) -> None:
    channel = make_channel(
        tls_server.host,
        tls_server.port,
        secret="not-the-password",
        starttls=True,
        username=USER,
        password="${SMTP_PASSWORD}",
        ca_file=str(tls_files.ca_file),
    )
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.final, error.partner_code) == (True, "535")
    assert "not-the-password" not in str(error)


def test_starttls_required_but_not_offered_is_final(smtp_server: SmtpServer) -> None:
    channel = make_channel(smtp_server.host, smtp_server.port, starttls=True)
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.final, error.partner_code) == (True, "config")
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("code", "stage", "final"),
    [(451, "mail", False), (550, "mail", True), (452, "data", False), (554, "data", True)],
)
def test_smtp_reply_codes(
    channel: Channel, smtp_server: SmtpServer, code: int, stage: str, final: bool
) -> None:
    smtp_server.fail_next(code, "Injected", stage=stage)

    error = send_error(channel)

    assert (error.final, error.partner_code) == (final, str(code))
    assert smtp_server.messages == []


@pytest.mark.parametrize(("code", "final"), [(450, False), (550, True)])
def test_every_recipient_refused(channel: Channel, smtp_server: SmtpServer, code: int, final: bool) -> None:
    smtp_server.fail_next(code, "Mailbox unavailable", stage="rcpt")
    smtp_server.fail_next(code, "Mailbox unavailable", stage="rcpt")

    error = send_error(channel)

    assert (error.final, error.partner_code) == (final, str(code))


def test_some_recipients_refused_is_a_success_that_says_so(channel: Channel, smtp_server: SmtpServer) -> None:
    smtp_server.refuse.add("bob@example.org")

    result = channel.send(MAIL, delivery_key="d")

    assert "bob@example.org" in (result.detail or "")
    assert smtp_server.messages[0].rcpt_tos == ["ann@example.org"]


def test_server_not_listening_is_retryable() -> None:
    channel = make_channel("127.0.0.1", free_port(), timeout=2)
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.final, error.partner_code) == (False, "connect")


@pytest.mark.parametrize(
    "params", [{**MAIL, "to": ""}, {**MAIL, "subject": " "}, {"to": "a@example.org", "subject": "s"}]
)
def test_incomplete_notify_parameters_are_final(
    channel: Channel, smtp_server: SmtpServer, params: dict[str, Any]
) -> None:
    error = send_error(channel, params)

    assert error.final
    assert smtp_server.messages == []


def test_credentials_without_tls_are_refused_at_configuration() -> None:
    with pytest.raises(ConfigError, match="without TLS"):
        make_channel("127.0.0.1", 25, username=USER, password="${SMTP_PASSWORD}")


def test_plain_login_allowed_when_explicitly_insecure() -> None:
    server = SmtpServer(username=USER, password=PASSWORD).start()
    try:
        channel = make_channel(
            server.host, server.port, username=USER, password="${SMTP_PASSWORD}", allow_insecure_auth=True
        )
        channel.send(MAIL, delivery_key="d")
        channel.close()
    finally:
        server.stop()

    assert server.messages[0].authenticated_as == USER
