"""deploy/nginx/st-provider.conf: ``nginx -t`` with a generated self-signed certificate,
then a real nginx on loopback in front of a stub upstream that records what it receives.

Only paths and ports are rewritten for the test (certificate, logs, listen addresses,
the upstream); every other directive runs as shipped. nginx must be installed
(``apt-get install nginx-light``, done by scripts/test).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from provider.settings import Settings
from tests.integration.test_deploy_gunicorn import load_config
from tests.support import REPO, free_port

CONF = REPO / "deploy" / "nginx" / "st-provider.conf"
MIB = 1024 * 1024
MONITOR_CLIENT = "127.0.0.1"  # listed in $st_provider_monitor
OTHER_CLIENT = "127.0.0.2"  # any other address

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
)


def _nginx() -> str:
    assert NGINX, "nginx is not installed: apt-get install nginx-light (scripts/test installs it)"
    return NGINX


# --- stub upstream -------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body_length: int


@dataclass
class Upstream:
    port: int
    requests: list[Recorded] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: Upstream

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, len(body))
        self.upstream.requests.append(record)
        payload = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Server", "gunicorn")
        self.send_header("X-Request-Id", f"rid-{len(self.upstream.requests)}")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    state = Upstream(port=0)
    handler = type("Handler", (_Handler,), {"upstream": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


# --- nginx ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass
class Nginx:
    https: str
    http: str
    folder: Path

    @property
    def access_log(self) -> str:
        path = self.folder / "st-provider.access.log"
        return path.read_text() if path.exists() else ""


def render(text: str, folder: Path, cert: tuple[Path, Path], *, upstream: int = 8080,
           https: int | None = None, http: int | None = None) -> str:  # fmt: skip
    """The shipped configuration with this test's paths and ports."""
    text = text.replace("/etc/ssl/st-provider/fullchain.pem", str(cert[0]))
    text = text.replace("/etc/ssl/st-provider/privkey.pem", str(cert[1]))
    text = text.replace("/var/log/nginx/", f"{folder}/")
    text = text.replace("server 127.0.0.1:8080 ", f"server 127.0.0.1:{upstream} ")
    if https is not None and http is not None:
        text = re.sub(r"^\s*listen \[::\]:\d+.*$", "", text, flags=re.MULTILINE)
        text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{https} ssl;")
        text = text.replace("listen 80;", f"listen 127.0.0.1:{http};")
    return text


def wrapper(folder: Path, site: Path) -> Path:
    main = folder / "nginx.conf"
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    main.write_text(
        f"daemon off;\nmaster_process off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"  client_body_temp_path {temp['body']};\n  proxy_temp_path {temp['proxy']};\n"
        f"  fastcgi_temp_path {temp['fastcgi']};\n  uwsgi_temp_path {temp['uwsgi']};\n"
        f"  scgi_temp_path {temp['scgi']};\n"
        f"  include {site};\n"
        "}\n"
    )
    return main


def nginx_test(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_nginx(), "-t", "-e", str(folder / "error.log"), "-p", str(folder), "-c", str(folder / "nginx.conf")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@contextmanager
def running_nginx(text: str, folder: Path, cert: tuple[Path, Path], upstream: Upstream) -> Iterator[Nginx]:
    folder.mkdir(parents=True, exist_ok=True)
    https, http = free_port(), free_port()
    site = folder / "st-provider.conf"
    site.write_text(render(text, folder, cert, upstream=upstream.port, https=https, http=http))
    main = wrapper(folder, site)
    checked = nginx_test(folder)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [_nginx(), "-e", str(folder / "error.log"), "-p", str(folder), "-c", str(main)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", https), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)
        yield Nginx(f"https://127.0.0.1:{https}", f"http://127.0.0.1:{http}", folder)
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()


@pytest.fixture(scope="module")
def nginx(
    tmp_path_factory: pytest.TempPathFactory, certificate: tuple[Path, Path], upstream: Upstream
) -> Iterator[Nginx]:
    with running_nginx(CONF.read_text(), tmp_path_factory.mktemp("nginx"), certificate, upstream) as server:
        yield server


def client(cert: tuple[Path, Path], source: str = MONITOR_CLIENT) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(cert[0]))
    transport = httpx.HTTPTransport(verify=context, local_address=source)
    return httpx.Client(transport=transport, timeout=10, follow_redirects=False)


# --- nginx -t ------------------------------------------------------------------------------


def test_nginx_t_accepts_the_shipped_configuration(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    site = tmp_path / "st-provider.conf"
    site.write_text(render(CONF.read_text(), tmp_path, certificate))
    wrapper(tmp_path, site)
    result = nginx_test(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_rejects_a_broken_configuration(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    site = tmp_path / "st-provider.conf"
    site.write_text(
        render(CONF.read_text(), tmp_path, certificate).replace(
            "client_max_body_size 1m;", "client_max_body_size;"
        )
    )
    wrapper(tmp_path, site)
    assert nginx_test(tmp_path).returncode != 0


def test_limits_match_the_service_and_gunicorn() -> None:
    text = CONF.read_text()
    assert re.search(r"^\s*client_max_body_size 1m;", text, re.MULTILINE)
    assert Settings().max_body_bytes == MIB, "change client_max_body_size with the service's body limit"
    cfg = load_config()
    upstream_keepalive = int(re.search(r"keepalive_timeout (\d+)s;\n\}", text).group(1))  # type: ignore[union-attr]
    assert upstream_keepalive < cfg.keepalive, "nginx must close idle upstream connections before gunicorn"
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", text).group(1))  # type: ignore[union-attr]
    assert read_timeout > cfg.timeout
    assert text.count("server_tokens off;") == text.count("server {")


# --- behaviour -----------------------------------------------------------------------------


def _last(upstream: Upstream, count_before: int) -> Recorded:
    assert len(upstream.requests) == count_before + 1, "the request did not reach the upstream exactly once"
    return upstream.requests[-1]


def test_soap_calls_are_forwarded_with_proxy_headers(
    nginx: Nginx, upstream: Upstream, certificate: tuple[Path, Path]
) -> None:
    before = len(upstream.requests)
    with client(certificate) as http:
        answer = http.post(
            f"{nginx.https}/ExternalProvider.asmx",
            content=b"<soap/>",
            headers={
                "Content-Type": "text/xml",
                "X-Forwarded-For": "198.51.100.66",
                "X-Forwarded-Ssl": "off",
                "X-Forwarded-Proto": "http",
            },
        )
    assert answer.status_code == 200
    assert answer.headers["server"] == "nginx", "no version, no gunicorn"
    assert answer.headers["x-request-id"].startswith("rid-")
    assert "max-age=" in answer.headers["strict-transport-security"]
    seen = _last(upstream, before)
    assert (seen.method, seen.path, seen.body_length) == ("POST", "/ExternalProvider.asmx", 7)
    assert seen.headers["x-forwarded-for"] == MONITOR_CLIENT, "a client's X-Forwarded-For is replaced"
    assert seen.headers["x-forwarded-proto"] == "https"
    assert "x-forwarded-ssl" not in seen.headers and "forwarded" not in seen.headers
    assert seen.headers["host"] == "127.0.0.1"


@pytest.mark.parametrize("path", ["/externalprovider.ASMX?WSDL", "/?wsdl"])
def test_every_soap_path_and_the_wsdl_are_served(
    nginx: Nginx, upstream: Upstream, certificate: tuple[Path, Path], path: str
) -> None:
    before = len(upstream.requests)
    with client(certificate, OTHER_CLIENT) as http:
        assert http.get(f"{nginx.https}{path}").status_code == 200
    assert _last(upstream, before).path == path


def test_bodies_over_the_limit_are_refused_before_the_upstream(
    nginx: Nginx, upstream: Upstream, certificate: tuple[Path, Path]
) -> None:
    before = len(upstream.requests)
    with client(certificate) as http:
        exact = http.post(f"{nginx.https}/ExternalProvider.asmx", content=b"x" * MIB)
        assert exact.status_code == 200
        assert _last(upstream, before).body_length == MIB
        over = http.post(f"{nginx.https}/ExternalProvider.asmx", content=b"x" * (MIB + 1))
    assert over.status_code == 413
    assert len(upstream.requests) == before + 1


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
def test_operations_endpoints_answer_the_monitoring_network_only(
    nginx: Nginx, upstream: Upstream, certificate: tuple[Path, Path], path: str
) -> None:
    before = len(upstream.requests)
    with client(certificate, OTHER_CLIENT) as outsider:
        assert outsider.get(f"{nginx.https}{path}").status_code == 403
    assert len(upstream.requests) == before
    with client(certificate, MONITOR_CLIENT) as monitor:
        assert monitor.get(f"{nginx.https}{path}").status_code == 200
        assert monitor.post(f"{nginx.https}{path}", content=b"").status_code == 403
    assert _last(upstream, before).path == path


@pytest.mark.parametrize(
    "path", ["/administrator", "/metrics/", "/ExternalProvider.asmx/extra", "/favicon.ico"]
)
def test_other_paths_are_not_served(
    nginx: Nginx, upstream: Upstream, certificate: tuple[Path, Path], path: str
) -> None:
    before = len(upstream.requests)
    with client(certificate) as http:
        assert http.get(f"{nginx.https}{path}").status_code == 404
    assert len(upstream.requests) == before


def test_the_console_answers_the_admin_network_only(
    nginx: Nginx, upstream: Upstream, certificate: tuple[Path, Path]
) -> None:
    before = len(upstream.requests)
    with client(certificate, OTHER_CLIENT) as outsider:
        assert outsider.get(f"{nginx.https}/admin/").status_code == 403
        assert outsider.post(f"{nginx.https}/admin/signin", content=b"x").status_code == 403
        assert outsider.get(f"{nginx.https}/admin").status_code == 403
    assert len(upstream.requests) == before
    with client(certificate, MONITOR_CLIENT) as admin:  # loopback is on the shipped admin list
        assert admin.get(f"{nginx.https}/admin").status_code == 308
        assert admin.get(f"{nginx.https}/admin/signin").status_code == 200
        assert admin.delete(f"{nginx.https}/admin/signin").status_code == 403
    assert _last(upstream, before).path == "/admin/signin"


def test_the_sign_in_code_page_is_public_small_and_rate_limited(
    nginx: Nginx, upstream: Upstream, certificate: tuple[Path, Path]
) -> None:
    before = len(upstream.requests)
    with client(certificate, OTHER_CLIENT) as customer:  # not an admin or monitoring address
        assert customer.get(f"{nginx.https}/signin-code").status_code == 200
        assert (
            customer.post(f"{nginx.https}/signin-code", content=b"address=a%40b.example").status_code == 200
        )
        assert customer.put(f"{nginx.https}/signin-code", content=b"x").status_code == 403
        assert customer.post(f"{nginx.https}/signin-code", content=b"x" * 9000).status_code == 413
    forwarded = upstream.requests[before:]
    assert [(r.method, r.path) for r in forwarded] == [("GET", "/signin-code"), ("POST", "/signin-code")]
    with client(certificate, OTHER_CLIENT) as flood:
        statuses = [flood.get(f"{nginx.https}/signin-code").status_code for _ in range(25)]
    assert 429 in statuses, "a flood from one address is cut off by nginx"


def test_other_methods_are_refused(nginx: Nginx, upstream: Upstream, certificate: tuple[Path, Path]) -> None:
    before = len(upstream.requests)
    with client(certificate) as http:
        assert http.put(f"{nginx.https}/ExternalProvider.asmx", content=b"x").status_code == 403
        assert http.delete(f"{nginx.https}/").status_code == 403
    assert len(upstream.requests) == before


def test_plain_http_redirects_to_https(nginx: Nginx, certificate: tuple[Path, Path]) -> None:
    with client(certificate) as http:
        answer = http.get(f"{nginx.http}/ExternalProvider.asmx?wsdl")
    assert answer.status_code == 301
    assert answer.headers["location"].startswith("https://")
    assert answer.headers["server"] == "nginx"


def test_access_log_has_no_query_strings(nginx: Nginx, certificate: tuple[Path, Path]) -> None:
    with client(certificate) as http:
        answer = http.get(f"{nginx.https}/ExternalProvider.asmx?wsdl&authPW=s3cret-query")
    assert answer.status_code == 200
    rid = answer.headers["x-request-id"]
    # nginx writes the line just after answering: wait for it.
    deadline = time.monotonic() + 5
    while f"rid={rid} " not in nginx.access_log:
        assert time.monotonic() < deadline, nginx.access_log
        time.sleep(0.05)
    log = nginx.access_log
    assert "s3cret" not in log
    assert re.search(rf'"GET /ExternalProvider\.asmx HTTP/1\.1" 200 .* rid={rid} ', log), log


def test_the_optional_allow_list_admits_only_the_listed_smartertrack_servers(
    tmp_path: Path, certificate: tuple[Path, Path], upstream: Upstream
) -> None:
    shipped = CONF.read_text()
    block = re.search(r"geo \$st_provider_caller \{.*?\n\}", shipped, re.DOTALL)
    assert block, "the caller allow-list block is missing"
    assert re.search(r"^\s*default\s+1;", block.group(0), re.MULTILINE), "as shipped every caller is allowed"
    restricted = shipped.replace(
        block.group(0),
        block.group(0).replace("default         1;", f"default 0;\n    {MONITOR_CLIENT} 1;"),
    )
    assert restricted != shipped
    with running_nginx(restricted, tmp_path / "nginx", certificate, upstream) as server:
        before = len(upstream.requests)
        with client(certificate, OTHER_CLIENT) as outsider:
            assert outsider.post(f"{server.https}/ExternalProvider.asmx", content=b"<x/>").status_code == 403
            assert outsider.get(f"{server.https}/?wsdl").status_code == 403
        assert len(upstream.requests) == before
        with client(certificate, MONITOR_CLIENT) as smartertrack:
            assert (
                smartertrack.post(f"{server.https}/ExternalProvider.asmx", content=b"<x/>").status_code == 200
            )
        assert _last(upstream, before).method == "POST"
