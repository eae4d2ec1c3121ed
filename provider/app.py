"""The WSGI application: the SOAP endpoint, ``/healthz`` and ``/metrics``.

:func:`build_application` is called once per serving process, after gunicorn has
forked (see :mod:`provider.server`): it opens the database, builds the domain
:class:`~provider.calls.Provider` and the :class:`~provider.soap.router.SoapRouter`.

Routes:

* ``/ExternalProvider.asmx`` (any case) and ``/``: SOAP 1.1/1.2 ``POST``, ``GET ?wsdl``; a
  ``GET``/``HEAD`` without ``?wsdl`` gets the public help page (:mod:`provider.web.help`), as ASMX
  shows one; any other method a 405 SOAP fault with ``Allow: GET, HEAD, POST``;
* ``/healthz`` (liveness): ``200 {"status": "ok"}`` whenever the process answers. It
  checks nothing outside the process, so a database or directory outage never gets
  healthy processes restarted (Kubernetes' liveness probe, systemd watchdogs);
* ``/readyz`` (readiness): 200 when the database and, when LDAP is configured, the
  directory answer; 503 naming what does not (``{"status": "unavailable", "directory": "unreachable"}``):
  take the instance out of the load balancer, do not restart it;
* ``/admin/...``: the admin console (:mod:`provider.web.console`, a Flask app) unless
  ``ST_PROVIDER_CONSOLE`` is off, when it is a 404 like any unknown path. It is built on a
  worker's first ``/admin`` request (:class:`LazyApp`), so a worker that only answers
  SOAP never imports Flask;
* ``/signin-code``: the public sign-in code page (:mod:`provider.web.signin_code`) when
  ``ST_PROVIDER_OTP`` is on, also built on its first request; a 404 otherwise;
* ``/metrics``: Prometheus text; aggregated over every worker when the server set
  ``PROMETHEUS_MULTIPROC_DIR`` (passed here as ``metrics_dir``).

Every SOAP request gets a request id (uuid4 hex, also sent back as ``X-Request-Id``)
and exactly one structured log line, event ``soap.call``, with the operation, the
outcome, the duration, the client address and whether the fast path answered (``fast_path``); and it is counted in ``SOAP_CALLS``,
``SOAP_LATENCY`` and (for refused requests) ``SOAP_FAULTS``.

The client address is resolved once per request by :mod:`provider.client_address`
(``X-Forwarded-For`` only from ``ST_PROVIDER_TRUSTED_PROXIES``). Wrong Web Service
Passwords are counted per address by a :class:`~provider.password_limiter.PasswordFailureLimiter`:
a blocked address gets ``429 Too Many Requests`` with ``Retry-After`` on the SOAP paths,
before its body is read, with no ``soap.call`` line (a flood must not flood the log);
the block is logged once when it starts (event ``security.authpw_blocked``) and counted
in ``AUTHPW_BLOCKS``; each refused request in ``SOAP_FAULTS{reason="authpw_blocked"}``.

Every SOAP request that gets a ``soap.call`` line is also told to the call journal
(:mod:`provider.journal`, when ``ST_PROVIDER_JOURNAL`` is on): accepted and refused
alike, after the answer is built, without waiting for the database.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from provider.assembly import build_provider, build_signin_requests
from provider.auth import directory_probe
from provider.calls import Provider
from provider.client_address import IPNetwork, address_bucket, client_address
from provider.db.session import Database
from provider.domain import CallObserver
from provider.errors import ProviderError
from provider.events.reports import refresh_queue_metrics
from provider.journal import build_journal
from provider.journal.entry import PendingCall
from provider.metrics import AUTHPW_BLOCKS, SOAP_CALLS, SOAP_FAULTS, SOAP_LATENCY
from provider.password_limiter import PasswordFailureLimiter
from provider.settings import Settings
from provider.soap.contract import ENDPOINT_PATH
from provider.soap.request import is_wsdl_query
from provider.soap.router import CallRecord, SoapResponse, SoapRouter
from provider.web.help import HelpPages

log = logging.getLogger("provider.app")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
CONSOLE_PREFIX = "/admin"
SIGNIN_CODE_PATH = "/signin-code"

_SOAP_PATHS = frozenset({"/", "", ENDPOINT_PATH.lower()})


@dataclass(frozen=True)
class HttpResponse:
    """A complete HTTP answer of a route that is not a SOAP call (health, metrics, 404, 429)."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes


Response = SoapResponse | HttpResponse


class ProviderApplication:
    """The WSGI callable. Thread-safe; one per worker process."""

    def __init__(
        self,
        router: SoapRouter,
        *,
        database: Database | None = None,
        metrics_dir: str | None = None,
        readiness: Mapping[str, Callable[[], bool]] | None = None,
        limiter: PasswordFailureLimiter | None = None,
        trusted_proxies: tuple[IPNetwork, ...] = (),
        journal: CallObserver | None = None,
        help_pages: HelpPages | None = None,
        console: WsgiApp | None = None,
        signin_code: WsgiApp | None = None,
    ) -> None:
        self.router = router
        self.console = console
        self.signin_code = signin_code
        self.help_pages = help_pages or HelpPages(
            namespace=router.namespace, public_address=router.public_address
        )
        self.journal = journal
        self.limiter = limiter
        self.trusted_proxies = trusted_proxies
        self.database = database
        self.metrics_dir = metrics_dir
        self.readiness = dict(readiness or {})
        self._queue_refreshed = float("-inf")
        self._queue_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "/")
        lowered = path.lower()
        if lowered in _SOAP_PATHS:
            response = self._help(environ) if _is_help_request(environ) else self._soap(environ)
        elif self.console is not None and lowered.startswith(CONSOLE_PREFIX) and _in_console(lowered):
            return self._console(environ, path, start_response)
        elif self.signin_code is not None and lowered.rstrip("/") == SIGNIN_CODE_PATH:
            return self._signin_code(environ, path, start_response)
        elif lowered == "/healthz":
            response = self._health(environ)
        elif lowered == "/readyz":
            response = self._ready(environ)
        elif lowered == "/metrics":
            response = self._metrics(environ)
        else:
            response = _text_response("404 Not Found", b"not found\n")
        start_response(response.status, response.headers)
        return [response.body]

    def _console(self, environ: dict[str, Any], path: str, start_response: StartResponse) -> Iterable[bytes]:
        """Hand ``/admin/...`` to the console, with ``/admin`` moved into ``SCRIPT_NAME``."""
        assert self.console is not None
        rest = path[len(CONSOLE_PREFIX) :]
        if not rest:
            start_response("308 Permanent Redirect", [("Location", "/admin/"), ("Content-Length", "0")])
            return [b""]
        shifted = dict(environ)
        shifted["SCRIPT_NAME"] = str(environ.get("SCRIPT_NAME") or "") + path[: len(CONSOLE_PREFIX)]
        shifted["PATH_INFO"] = rest
        return self.console(shifted, start_response)

    def _signin_code(
        self, environ: dict[str, Any], path: str, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Hand ``/signin-code`` to the sign-in code page, with the path moved into ``SCRIPT_NAME``."""
        assert self.signin_code is not None
        shifted = dict(environ)
        shifted["SCRIPT_NAME"] = str(environ.get("SCRIPT_NAME") or "") + path[: len(SIGNIN_CODE_PATH)]
        shifted["PATH_INFO"] = "/"
        return self.signin_code(shifted, start_response)

    def _soap(self, environ: dict[str, Any]) -> Response:
        started = time.perf_counter()
        request_id = new_request_id()
        client = client_address(environ, self.trusted_proxies)
        bucket = address_bucket(client)
        if self.limiter is not None:
            retry_after = self.limiter.retry_after(bucket)
            if retry_after is not None:
                return _blocked(retry_after, request_id)
        response = self.router.dispatch(environ, request_id=request_id, client=client)
        response.headers.append(("X-Request-Id", request_id))
        record = response.record
        if record is None:
            return response
        if record.permission_denied and self.limiter is not None and self.limiter.record_failure(bucket):
            _log_block(self.limiter, client, request_id)
        elapsed = time.perf_counter() - started
        _count_and_log(record, response.status, elapsed, request_id, client)
        if self.journal is not None:
            _journal(self.journal, record, request_id, client, elapsed)
        return response

    def _help(self, environ: dict[str, Any]) -> HttpResponse:
        page = self.help_pages.respond(environ)
        return HttpResponse(page.status, page.headers, page.body)

    def _health(self, environ: dict[str, Any]) -> HttpResponse:
        # Liveness only: answering at all is the check (see the module docstring).
        return self._report(environ, {})

    def _ready(self, environ: dict[str, Any]) -> HttpResponse:
        checks = {"database": self.database.ping} if self.database is not None else {}
        checks.update(self.readiness)
        return self._report(environ, checks)

    def _report(self, environ: dict[str, Any], checks: Mapping[str, Callable[[], bool]]) -> HttpResponse:
        if str(environ.get("REQUEST_METHOD", "GET")).upper() not in ("GET", "HEAD"):
            return _text_response("405 Method Not Allowed", b"method not allowed\n", [("Allow", "GET, HEAD")])
        results = {name: check() for name, check in checks.items()}
        healthy = all(results.values())
        payload = {"status": "ok" if healthy else "unavailable"}
        payload.update({name: "ok" if ok else "unreachable" for name, ok in results.items()})
        body = json.dumps(payload).encode()
        status = "200 OK" if healthy else "503 Service Unavailable"
        return HttpResponse(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
            body,
        )

    def _refresh_queue_gauges(self) -> None:
        """Bring the delivery-queue gauges up to date (at most every few seconds, one thread at a time).

        Workers may run on other hosts, so a scrape of any instance shows the shared queue.
        """
        if self.database is None or not self._queue_lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._queue_refreshed < QUEUE_REFRESH_SECONDS:
                return
            self._queue_refreshed = time.monotonic()
            refresh_queue_metrics(self.database)
        except ProviderError as exc:
            log.warning(
                "queue gauges not refreshed", extra={"event": "metrics.queue_failed", "error": str(exc)}
            )
        finally:
            self._queue_lock.release()

    def _metrics(self, environ: dict[str, Any]) -> HttpResponse:
        if str(environ.get("REQUEST_METHOD", "GET")).upper() not in ("GET", "HEAD"):
            return _text_response("405 Method Not Allowed", b"method not allowed\n", [("Allow", "GET, HEAD")])
        self._refresh_queue_gauges()
        if self.metrics_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.metrics_dir)  # type: ignore[no-untyped-call]
            body = generate_latest(registry)
        else:
            body = generate_latest(REGISTRY)
        return HttpResponse(
            "200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))], body
        )


QUEUE_REFRESH_SECONDS = 5.0


class LazyApp:
    """A WSGI app built by ``build`` on its first request (once, whichever thread comes first)."""

    def __init__(self, build: Callable[[], WsgiApp]) -> None:
        self._build = build
        self._app: WsgiApp | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        app = self._app
        if app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._build()
                app = self._app
        return app(environ, start_response)


def _in_console(lowered: str) -> bool:
    """``/admin`` itself or a path under ``/admin/``."""
    return lowered == CONSOLE_PREFIX or lowered.startswith(CONSOLE_PREFIX + "/")


def _is_help_request(environ: Mapping[str, Any]) -> bool:
    """A ``GET`` or ``HEAD`` of the SOAP endpoint that does not ask for the WSDL."""
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    return method in ("GET", "HEAD") and not is_wsdl_query(str(environ.get("QUERY_STRING", "")))


def new_request_id() -> str:
    """A fresh request id: 32 hex digits of a random (version 4) UUID, as ``uuid.uuid4().hex``
    writes it, without building the ``UUID`` object."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


_MAX_CALL_METRICS: Final = 256
#: (operation, outcome) -> the children of SOAP_CALLS and SOAP_LATENCY (``labels()`` takes a
#: lock and builds a key per call; operations and outcomes are a few fixed names)
_CALL_METRICS: dict[tuple[str, str], tuple[Any, Any]] = {}


def _call_metrics(operation: str, outcome: str) -> tuple[Any, Any]:
    """The call counter and the latency histogram of ``operation`` and ``outcome``."""
    key = (operation, outcome)
    children = _CALL_METRICS.get(key)
    if children is None:
        children = (SOAP_CALLS.labels(operation, outcome), SOAP_LATENCY.labels(operation))
        if len(_CALL_METRICS) < _MAX_CALL_METRICS:
            _CALL_METRICS[key] = children
    return children


def _count_and_log(
    record: CallRecord, status: str, elapsed: float, request_id: str, client: str | None
) -> None:
    """The metrics and the one ``soap.call`` log line of a SOAP call (the line's fields are
    only gathered when its level is on)."""
    calls, latency = _call_metrics(record.operation, record.outcome)
    calls.inc()
    latency.observe(elapsed)
    if record.fault is not None:
        SOAP_FAULTS.labels(record.fault).inc()
    level = logging.WARNING if record.outcome == "error" else logging.INFO
    if not log.isEnabledFor(level):
        return
    extra: dict[str, Any] = {
        "event": "soap.call",
        "operation": record.operation,
        "outcome": record.outcome,
        "duration_ms": round(elapsed * 1000, 3),
        "request_id": request_id,
        "client": client,
        "soap_version": record.soap_version,
        "status": int(status[:3]),
        "fast_path": record.fast_path,
    }
    if record.fault is not None:
        extra["fault"] = record.fault
    if record.namespace is not None:
        extra["namespace"] = record.namespace[:200]
    log.log(level, "soap call", extra=extra)


def _journal(
    journal: CallObserver, record: CallRecord, request_id: str, client: str | None, elapsed: float
) -> None:
    """Tell the journal about this call: its raw values, the entry (secrets removed) is built
    by the journal's writer thread (:class:`~provider.journal.entry.PendingCall`). The journal never
    raises (a lost entry is counted)."""
    journal.record(
        PendingCall(
            time.time(),
            record.operation,
            record.outcome,
            record.fault,
            record.permission_denied,
            record.request,
            record.result,
            request_id,
            client,
            elapsed,
        )
    )


def _log_block(limiter: PasswordFailureLimiter, client: str | None, request_id: str) -> None:
    """Once per block, when it starts: the log event and the metric."""
    AUTHPW_BLOCKS.inc()
    log.warning(
        "client blocked after too many wrong Web Service Passwords",
        extra={
            "event": "security.authpw_blocked",
            "client": client,
            "failures": limiter.max_failures,
            "window_seconds": limiter.window_seconds,
            "cooldown_seconds": limiter.cooldown_seconds,
            "request_id": request_id,
        },
    )


def _blocked(retry_after: int, request_id: str) -> HttpResponse:
    """429 for an address in its cooldown (the request itself is not read)."""
    SOAP_FAULTS.labels("authpw_blocked").inc()
    body = b"too many wrong Web Service Passwords from this address; retry later\n"
    extra = [("Retry-After", str(retry_after)), ("Cache-Control", "no-store"), ("X-Request-Id", request_id)]
    return _text_response("429 Too Many Requests", body, extra)


def _text_response(status: str, body: bytes, extra: list[tuple[str, str]] | None = None) -> HttpResponse:
    """A plain-text answer (UTF-8) with ``extra`` headers after the content headers."""
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    return HttpResponse(status, headers + (extra or []), body)


def build_application(
    settings: Settings,
    *,
    database: Database | None = None,
    provider: Provider | None = None,
    metrics_dir: str | None = None,
) -> ProviderApplication:
    """The WSGI application for ``settings``.

    Opens the database (unless given) and builds the domain provider (unless given;
    tests pass one with in-tree plug-ins). ``metrics_dir`` is the Prometheus
    multiprocess directory the server set as ``PROMETHEUS_MULTIPROC_DIR``; without it
    ``/metrics`` serves this process's default registry. Raises ConfigError when the
    Web Service Password is missing.
    """
    settings.require_password()
    if database is None:
        database = Database(settings.database_url)
    if provider is None:
        provider = build_provider(settings, database)
    probe = directory_probe(provider.authenticator)
    readiness = {"directory": probe} if probe is not None else {}
    router = SoapRouter(
        provider.call,
        namespace=settings.namespace,
        accept_namespaces=settings.accept_namespaces,
        max_body_bytes=settings.max_body_bytes,
        public_url=settings.public_url,
        fast_path=settings.soap_fast_path,
    )
    console: WsgiApp | None = None
    if settings.console.enabled:
        directory = provider.authenticator
        console_database = database

        def build_console() -> WsgiApp:
            from provider.web.console import build_console_app  # Flask: on the first /admin request

            flask_app = build_console_app(
                settings, console_database, directory=directory, readiness=readiness
            )
            return cast("WsgiApp", flask_app)

        console = LazyApp(build_console)
    return ProviderApplication(
        router,
        console=console,
        signin_code=_signin_code_page(settings, database, provider),
        database=database,
        metrics_dir=metrics_dir,
        readiness=readiness,
        limiter=PasswordFailureLimiter.from_settings(settings.password_limit),
        trusted_proxies=settings.trusted_proxies,
        journal=build_journal(settings, database),
    )


def _signin_code_page(settings: Settings, database: Database, provider: Provider) -> WsgiApp | None:
    """The ``/signin-code`` page when ``ST_PROVIDER_OTP`` is on, built on its first request
    (so a worker imports Flask only once someone asks for a code)."""
    requests = build_signin_requests(settings, database, provider.authenticator)
    if requests is None:
        return None

    def build_page() -> WsgiApp:
        from provider.web.console import session_secret  # Flask: on the first /signin-code request
        from provider.web.signin_code import build_signin_app

        app = build_signin_app(
            requests, secret=session_secret(settings), trusted_proxies=settings.trusted_proxies
        )
        return cast("WsgiApp", app)

    return LazyApp(build_page)
