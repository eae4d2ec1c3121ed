"""Email over SMTP (smtplib): one message per notification.

Settings: ``host``, ``port`` (default 587 with STARTTLS, 465 with ``ssl``, else 25),
``starttls`` (default true: secure by default; a server without STARTTLS then fails,
final), ``ssl`` (implicit TLS), ``username`` / ``password`` (``${VAR}``), ``from``,
``ca_file``, ``timeout``. Certificates are always verified. Credentials are never
sent over an unencrypted connection unless ``allow_insecure_auth: true``.

Notify parameters: ``to`` (required), ``cc``, ``bcc``, ``reply_to``: each one address
(``ops@example.org`` or ``Ops <ops@example.org>``) or a list of them; one rendered value
is never split into several, so a template rendering ``a@x, b@y`` or a CR LF and
``Bcc:`` is refused (final) instead of mailing someone else. ``subject`` (required),
``text`` and/or ``html`` (at least one; both make a multipart/alternative message). The
Message-ID is derived from the delivery key, so a receiving system can drop a duplicate.

Failures: authentication refused, 5xx replies, TLS certificate failures and missing
server features are final; 4xx replies, timeouts and connection errors are retryable.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Mapping
from email.errors import HeaderParseError, MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, parseaddr
from typing import Any

from provider.channels.base import SendResult
from provider.channels.impl import http
from provider.channels.impl.http import ssl_context
from provider.errors import ChannelError
from provider.redact import Redactor

TYPE_NAME = "email"


MAX_ADDRESS_CHARS = 320
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f,;]")
_DOMAIN = re.compile(r"^(?!-)[^\W_](?:[\w-]{0,61}[^\W_])?(?:\.[^\W_](?:[\w-]{0,61}[^\W_])?)*$")


def parse_address(text: str, param: str) -> str:
    """The addr-spec of ``text``, which must be exactly one address; raises ChannelError (final).

    ``text`` may carry a display name (``Ops <ops@example.org>``). Refused: control
    characters (CR, LF), commas and semicolons, several addresses, and anything the
    standard library's parser does not read as one ``local@domain`` address.
    """
    raw = text.strip()

    def refuse(why: str) -> ChannelError:
        shown = raw if len(raw) <= 80 else raw[:80] + "..."
        return ChannelError(
            f"{TYPE_NAME}: notify parameter {param!r}: {shown!r} is not one e-mail address ({why})",
            final=True,
            partner_code="invalid_address",
        )

    if not raw or len(raw) > MAX_ADDRESS_CHARS:
        raise refuse("empty or too long")
    if _FORBIDDEN.search(raw):
        raise refuse("control characters, commas and semicolons are not allowed; give a list for several")
    if len(getaddresses([raw])) != 1:
        raise refuse("more than one address")
    _, addr = parseaddr(raw)
    if not addr or addr.count("@") != 1:
        raise refuse("no local@domain address")
    try:
        parsed = Address(addr_spec=addr)
    except (HeaderParseError, MessageError, ValueError, IndexError, TypeError):
        raise refuse("not a valid address") from None
    if not parsed.username or not _DOMAIN.match(parsed.domain) or parsed.addr_spec != addr:
        raise refuse("not a valid address")
    if raw != addr:  # only "Name <addr>" (or "<addr>"): no groups such as "Bcc: addr"
        name = raw.removesuffix(f"<{addr}>").strip() if raw.endswith(f"<{addr}>") else None
        quoted = name is not None and len(name) >= 2 and name[0] == name[-1] == '"' and '"' not in name[1:-1]
        if name is None or (not quoted and re.search(r'[<>:@"]', name)):
            raise refuse("only an address or Name <address>")
    return addr


def addresses(value: Any, param: str = "to") -> list[str]:
    """The addresses of a notify parameter: one address, or a list of single addresses.

    Raises ChannelError (final) for a value that is not exactly one address (see
    :func:`parse_address`).
    """
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, list | tuple) else [value]
    return [parse_address(str(item), param) for item in items if item is not None and str(item).strip()]


def _code_error(prefix: str, code: int, text: bytes | str, redact: Redactor) -> ChannelError:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return ChannelError(
        f"{TYPE_NAME}: {prefix}: {code} {http.excerpt(message, redact)}",
        final=code >= 500,
        partner_code=str(code),
    )


class EmailChannel:
    """Sends e-mail through one SMTP server; see the module docstring."""

    type_name = TYPE_NAME

    def __init__(
        self,
        name: str,
        *,
        host: str,
        sender: str,
        port: int | None = None,
        starttls: bool = True,
        use_ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        allow_insecure_auth: bool = False,
        ca_file: str | None = None,
        local_hostname: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port or (465 if use_ssl else 587 if starttls else 25)
        self.starttls = starttls and not use_ssl
        self.use_ssl = use_ssl
        self.sender = sender
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.allow_insecure_auth = allow_insecure_auth
        self._username = username
        self._password = password
        self._ca_file = ca_file
        self._context = ssl_context(ca_file)
        self._redact = Redactor([password])

    def message(self, params: Mapping[str, Any], delivery_key: str) -> tuple[EmailMessage, list[str]]:
        """The message for ``params`` and its envelope recipients; raises ChannelError (final)."""
        to = addresses(params.get("to"), "to")
        cc = addresses(params.get("cc"), "cc")
        bcc = addresses(params.get("bcc"), "bcc")
        reply_to = addresses(params.get("reply_to"), "reply_to")
        if not to:
            raise ChannelError(f"{TYPE_NAME}: notify parameter 'to' is required", final=True)
        subject = params.get("subject")
        if subject is None or str(subject).strip() == "":
            raise ChannelError(f"{TYPE_NAME}: notify parameter 'subject' is required", final=True)
        text, html = params.get("text"), params.get("html")
        if not text and not html:
            raise ChannelError(f"{TYPE_NAME}: notify parameter 'text' or 'html' is required", final=True)
        msg = EmailMessage()
        try:
            msg["From"] = self.sender
            msg["To"] = ", ".join(to)
            if cc:
                msg["Cc"] = ", ".join(cc)
            if reply_to:
                msg["Reply-To"] = ", ".join(reply_to)
            msg["Subject"] = " ".join(str(subject).split())
            msg["Date"] = formatdate(localtime=False, usegmt=True)
            local = re.sub(r"[^A-Za-z0-9._-]", "-", delivery_key)[:128] or "delivery"
            msg["Message-ID"] = f"<{local}@st-provider>"
        except (ValueError, TypeError) as exc:
            raise ChannelError(f"{TYPE_NAME}: invalid header: {exc}", final=True) from exc
        if text:
            msg.set_content(str(text))
            if html:
                msg.add_alternative(str(html), subtype="html")
        else:
            msg.set_content(str(html), subtype="html")
        return msg, [*to, *cc, *bcc]

    def send(self, params: Mapping[str, Any], *, delivery_key: str) -> SendResult:
        """Send one message; raises ChannelError (see module docstring)."""
        msg, recipients = self.message(params, delivery_key)
        try:
            refused = self._deliver(msg, recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(
                f"{TYPE_NAME}: authentication refused ({exc.smtp_code})",
                final=True,
                partner_code=str(exc.smtp_code),
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise ChannelError(
                f"{TYPE_NAME}: every recipient was refused ({', '.join(str(c) for c in sorted(set(codes)))})",
                final=all(code >= 500 for code in codes),
                partner_code=str(max(codes)) if codes else None,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(
                f"{TYPE_NAME}: server does not support {exc}", final=True, partner_code="config"
            ) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise ChannelError(
                f"{TYPE_NAME}: server disconnected ({exc})", partner_code="disconnected"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise _code_error("refused", exc.smtp_code, exc.smtp_error, self._redact) from None
        except smtplib.SMTPException as exc:
            raise ChannelError(
                f"{TYPE_NAME}: {type(exc).__name__}: {http.excerpt(str(exc), self._redact)}"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise ChannelError(
                f"{TYPE_NAME}: TLS certificate verification failed ({exc.verify_message})",
                final=True,
                partner_code="tls",
            ) from None
        except TimeoutError:
            raise ChannelError(f"{TYPE_NAME}: no answer within the timeout", partner_code="timeout") from None
        except OSError as exc:
            raise ChannelError(
                f"{TYPE_NAME}: cannot connect to {self.host}:{self.port} "
                f"({type(exc).__name__}: {exc.strerror or exc})",
                partner_code="connect",
            ) from None
        detail = f"accepted for {len(recipients) - len(refused)} recipient(s)"
        if refused:
            detail += f"; refused: {', '.join(sorted(refused))}"
        return SendResult(partner_id=str(msg["Message-ID"]), status=None, detail=detail)

    def _deliver(self, msg: EmailMessage, recipients: list[str]) -> dict[str, tuple[int, bytes]]:
        smtp: smtplib.SMTP
        if self.use_ssl:
            smtp = smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=self.local_hostname,
                timeout=self.timeout,
                context=self._context,
            )
        else:
            smtp = smtplib.SMTP(
                self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
            )
        with smtp:
            smtp.ehlo()
            if self.starttls:
                if not smtp.has_extn("starttls"):
                    raise smtplib.SMTPNotSupportedError("STARTTLS")
                smtp.starttls(context=self._context)
                smtp.ehlo()
            if self._username:
                if not (self.starttls or self.use_ssl or self.allow_insecure_auth):
                    raise ChannelError(
                        f"{TYPE_NAME}: refusing to send credentials without TLS",
                        final=True,
                        partner_code="config",
                    )
                smtp.login(self._username, self._password or "")
            return smtp.send_message(msg, from_addr=self.sender, to_addrs=recipients)

    def close(self) -> None:
        """Nothing to release: each send opens and closes its own connection."""


def build(name: str, settings: Mapping[str, Any], timeout: float) -> EmailChannel:
    return EmailChannel(
        name,
        host=settings["host"],
        port=settings["port"],
        sender=settings["from"],
        starttls=settings["starttls"],
        use_ssl=settings["ssl"],
        username=settings["username"],
        password=settings["password"],
        allow_insecure_auth=settings["allow_insecure_auth"],
        ca_file=settings["ca_file"],
        local_hostname=settings["local_hostname"],
        timeout=settings["timeout"] or timeout,
    )
