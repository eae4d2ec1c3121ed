"""deploy/gunicorn.conf.py: loaded by gunicorn's own config loader, and run for real.

The loader tests read the file exactly as ``gunicorn -c`` does
(``Application.load_config_from_file``); the e2e tests start plain gunicorn with it and
the provider's ``wsgi_application()`` factory on loopback.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from gunicorn.app.base import Application
from gunicorn.config import Config
from gunicorn.glogging import Logger

from tests.support import REPO, base_env, free_port, stop_process, wait_http

CONFIG = REPO / "deploy" / "gunicorn.conf.py"
SIZING_ENV = ("ST_PROVIDER_WORKERS", "ST_PROVIDER_THREADS", "ST_PROVIDER_BIND", "WEB_CONCURRENCY")


class _ConfigLoader(Application):  # type: ignore[misc]
    """gunicorn's Application reading only the given file (no command line, no app)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__()

    def init(self, parser: Any, opts: Any, args: Any) -> None:
        return None

    def load_config(self) -> None:
        self.load_config_from_file(str(self.path))

    def load(self) -> Any:
        raise AssertionError("the configuration must not load the application")


def load_config(path: Path = CONFIG) -> Config:
    """The gunicorn Config built from ``path`` with the current environment."""
    return _ConfigLoader(path).cfg


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*SIZING_ENV, "FORWARDED_ALLOW_IPS", "GUNICORN_ACCESSLOG", "PROMETHEUS_MULTIPROC_DIR"):
        # setenv first, so monkeypatch restores the variable's absence even when a hook
        # under test sets it directly in os.environ.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_are_sized_from_the_cpus_and_sane(clean_env: pytest.MonkeyPatch) -> None:
    cfg = load_config()
    cpus = os.cpu_count() or 1
    assert 3 <= cfg.workers <= min(2 * cpus + 1, 12)
    assert cfg.threads == 4
    assert cfg.worker_class_str == "provider.http_buffering.BufferingWorker"
    assert cfg.worker_connections >= 4 * cfg.threads
    assert cfg.preload_app is False
    assert cfg.bind == ["127.0.0.1:8080"]
    # Timeouts: a stuck worker is replaced, stop/reload lets requests finish first.
    assert 10 <= cfg.timeout <= 120
    assert 0 < cfg.graceful_timeout <= cfg.timeout
    assert 1 <= cfg.keepalive <= 30
    assert cfg.max_requests > 0 and 0 < cfg.max_requests_jitter < cfg.max_requests
    # Request limits at or under gunicorn's defaults.
    assert 0 < cfg.limit_request_line <= 8190
    assert 0 < cfg.limit_request_fields <= 100
    assert 0 < cfg.limit_request_field_size <= 8190
    assert cfg.forwarded_allow_ips == ["127.0.0.1", "::1"]
    assert cfg.secure_scheme_headers == {"X-FORWARDED-PROTO": "https"}
    assert cfg.accesslog == "-"
    assert cfg.wsgi_app == "provider.cli:wsgi_application()"
    for hook in ("on_starting", "child_exit", "on_exit"):
        assert getattr(cfg, hook).__module__ == "__config__", hook


def test_environment_overrides(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ST_PROVIDER_WORKERS", "3")
    clean_env.setenv("ST_PROVIDER_THREADS", "7")
    clean_env.setenv("ST_PROVIDER_BIND", "0.0.0.0:9000")
    clean_env.setenv("FORWARDED_ALLOW_IPS", "10.0.0.5,10.1.0.0/16")
    clean_env.setenv("GUNICORN_ACCESSLOG", "off")
    cfg = load_config()
    assert (cfg.workers, cfg.threads, cfg.bind) == (3, 7, ["0.0.0.0:9000"])
    assert cfg.forwarded_allow_ips == ["10.0.0.5", "10.1.0.0/16"]
    assert cfg.accesslog is None


def test_web_concurrency_is_the_fallback_for_workers(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WEB_CONCURRENCY", "5")
    assert load_config().workers == 5
    clean_env.setenv("ST_PROVIDER_WORKERS", "2")
    assert load_config().workers == 2


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_invalid_worker_count_stops_gunicorn(
    clean_env: pytest.MonkeyPatch, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("ST_PROVIDER_WORKERS", value)
    with pytest.raises(SystemExit):
        load_config()
    assert "ST_PROVIDER_WORKERS" in capsys.readouterr().err


def test_access_log_leaves_out_query_strings_and_credentials(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    cfg = load_config()
    log_file = tmp_path / "access.log"
    cfg.set("accesslog", str(log_file))
    logger = Logger(cfg)
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/ExternalProvider.asmx?wsdl&authPW=s3cret-query",
        "PATH_INFO": "/ExternalProvider.asmx",
        "QUERY_STRING": "wsdl&authPW=s3cret-query",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": "SmarterTrack",
        "HTTP_REFERER": "https://help.example.com/?token=s3cret-referer",
        "HTTP_AUTHORIZATION": "Basic s3cret-auth",
        "HTTP_COOKIE": "session=s3cret-cookie",
    }
    request = SimpleNamespace(
        headers=[
            ("AUTHORIZATION", "Basic s3cret-auth"),
            ("COOKIE", "session=s3cret-cookie"),
            ("X-FORWARDED-FOR", "203.0.113.9"),
            ("USER-AGENT", "SmarterTrack"),
        ]
    )
    response = SimpleNamespace(status="200 OK", headers=[("X-Request-Id", "rid-4711")], sent=42)
    logger.access(response, request, environ, timedelta(milliseconds=12))
    for handler in logger.access_log.handlers:
        handler.flush()
    line = log_file.read_text()
    assert "s3cret" not in line
    assert '"GET /ExternalProvider.asmx HTTP/1.1" 200 42' in line
    assert "rid=rid-4711" in line
    assert 'fwd="203.0.113.9"' in line
    assert "12ms" in line
    for handler in logger.access_log.handlers + logger.error_log.handlers:
        handler.close()


def test_metrics_directory_hooks(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(tempfile, "tempdir", str(tmp_path))
    cfg = load_config()
    cfg.on_starting(None)
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert made.is_dir() and made.parent == tmp_path
    cfg.child_exit(None, SimpleNamespace(pid=999_999))  # a pid without files: no error
    cfg.on_exit(None)
    assert not made.exists()


def test_hooks_leave_a_directory_they_did_not_make(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    chosen = tmp_path / "operator-metrics"
    chosen.mkdir()
    clean_env.setenv("PROMETHEUS_MULTIPROC_DIR", str(chosen))
    cfg = load_config()
    cfg.on_starting(None)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(chosen)
    cfg.on_exit(None)
    assert chosen.is_dir()


# --- plain gunicorn, for real ------------------------------------------------------------


@contextmanager
def plain_gunicorn(env: dict[str, str], log_path: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(CONFIG)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    try:
        yield process
    finally:
        stop_process(process, timeout=30)


def _wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _gunicorn_env(database_url: str, port: int, tmpdir: Path) -> dict[str, str]:
    env = base_env(
        database_url,
        ST_PROVIDER_BIND=f"127.0.0.1:{port}",
        ST_PROVIDER_WORKERS="1",
        ST_PROVIDER_THREADS="2",
        TMPDIR=str(tmpdir),
    )
    for name in ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "GUNICORN_ACCESSLOG", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return env


@pytest.mark.e2e
def test_plain_gunicorn_serves_reloads_and_stops_cleanly(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    log_path = tmp_path / "gunicorn.log"
    base = f"http://127.0.0.1:{port}"
    with plain_gunicorn(_gunicorn_env(sqlite_url, port, tmpdir), log_path, tmp_path) as process:
        wait_http(f"{base}/healthz", process=process)
        assert len(list(tmpdir.glob("st-provider-metrics-*"))) == 1
        wsdl = httpx.get(f"{base}/ExternalProvider.asmx?wsdl&authPW=s3cret-query", timeout=10)
        assert wsdl.status_code == 200 and b"GetCustomFieldOptions" in wsdl.content
        assert "st_provider_" in httpx.get(f"{base}/metrics", timeout=10).text

        # Graceful reload: a new worker comes up, the old one leaves, the service keeps answering.
        booted = log_path.read_text().count("Booting worker")
        process.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: log_path.read_text().count("Booting worker") > booted), log_path.read_text()
        assert _wait_for(lambda: "Worker exiting" in log_path.read_text()), log_path.read_text()
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    log = log_path.read_text()
    assert re.search(r'"GET /ExternalProvider\.asmx HTTP/1\.1" 200 \d+ \d+ms rid=', log), log
    assert "s3cret" not in log
    assert not list(tmpdir.glob("st-provider-metrics-*")), "the metrics directory was left behind"


@pytest.mark.e2e
def test_plain_gunicorn_refuses_a_database_behind_the_migrations(tmp_path: Path) -> None:
    port = free_port()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    log_path = tmp_path / "gunicorn.log"
    env = _gunicorn_env(f"sqlite:///{tmp_path / 'empty.db'}", port, tmpdir)
    with plain_gunicorn(env, log_path, tmp_path) as process:
        assert process.wait(timeout=60) != 0
    assert "st-provider db upgrade" in log_path.read_text()
