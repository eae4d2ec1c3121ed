"""A real SMTP server (aiosmtpd) on a free loopback port that records what it accepted.

Optional AUTH (``username``/``password``), STARTTLS (``tls`` context, with
``require_starttls``), and injected failures: :meth:`SmtpServer.fail_next` makes the
next MAIL, RCPT or DATA command answer a given code (``451`` temporary, ``550``
permanent, ...).
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support import free_port


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    authenticated_as: str | None
    tls: bool

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_MAIL(
        self, smtp: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        failure = self.server._take_failure("mail")
        if failure:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, smtp: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        failure = self.server._take_failure("rcpt")
        if failure:
            return failure
        if address in self.server.refuse:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        failure = self.server._take_failure("data")
        if failure:
            return failure
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        mail = Mail(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or envelope.content),
            authenticated_as=login,
            tls=smtp.transport.get_extra_info("sslcontext") is not None,
        )
        with self.server._lock:
            self.server.messages.append(mail)
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        require_starttls: bool = False,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.username = username
        self.password = password
        self.messages: list[Mail] = []
        self.refuse: set[str] = set()
        self._failures: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        kwargs: dict[str, Any] = {
            "auth_require_tls": tls is not None,
            "authenticator": self._authenticate if username else None,
            "ready_timeout": 5.0,
        }
        if tls is not None:
            kwargs.update(tls_context=tls, require_starttls=require_starttls)
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, **kwargs)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def fail_next(self, code: int, text: str = "Injected failure", stage: str = "rcpt") -> None:
        with self._lock:
            self._failures.append((stage, f"{code} {text}"))

    def _take_failure(self, stage: str) -> str | None:
        with self._lock:
            for index, (when, reply) in enumerate(self._failures):
                if when == stage:
                    del self._failures[index]
                    return reply
        return None

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return True
            time.sleep(0.02)
        return len(self.messages) >= count

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
