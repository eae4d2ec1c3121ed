"""Helpers shared by the test suite (no fixtures here; see conftest.py)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get("ST_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
WEB_SERVICE_PASSWORD = "test-ws-password"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


def create_pg_database(template: str | None = None) -> str:
    """Create a uniquely named PostgreSQL database (optionally from a template); returns its name."""
    name = f"stp_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def e2e_database_url(request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    """The database URL for a fixture parametrised ``"sqlite"`` / ``"postgresql"`` (``request.param``).

    SQLite: a file in ``directory`` (the server migrates it). PostgreSQL: a fresh database cloned
    from the migrated ``pg_template``, dropped when the block ends.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{directory / 'provider.db'}"
        return
    name = create_pg_database(template=request.getfixturevalue("pg_template"))
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)


def base_env(database_url: str, **extra: str) -> dict[str, str]:
    """An environment for an `st-provider` process: the test password, this database, no stray ST_PROVIDER_*."""
    # No stray ST_PROVIDER_* and no metrics directory of another process.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ST_PROVIDER_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        ST_PROVIDER_WEB_SERVICE_PASSWORD=WEB_SERVICE_PASSWORD,
        ST_PROVIDER_DATABASE_URL=database_url,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_cli(
    args: list[str],
    env: Mapping[str, str],
    *,
    input_text: str | None = None,
    timeout: float = 60,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    """Run `st-provider ARGS` as a real process (in ``cwd``: the checkout unless given)."""
    env = dict(env)
    if cwd != REPO:  # `python -m provider.cli` must still find this checkout's package
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "provider.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        input=input_text,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def import_rules(env: Mapping[str, str], path: Path) -> int:
    """``st-provider rules import PATH --replace``; asserts it succeeded, returns the rule set version."""
    result = run_cli(["rules", "import", str(path), "--replace"], env)
    assert result.returncode == 0, result.stderr
    match = re.search(r"rule set version (\d+)", result.stdout)
    assert match is not None, result.stdout
    return int(match.group(1))


@dataclass
class ServerProcess:
    """A running `st-provider serve` (gunicorn) on loopback."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"{self.url}/ExternalProvider.asmx"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 20) -> int:
    """SIGTERM ``process`` if it still runs, SIGKILL it after ``timeout`` seconds; its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return int(process.returncode)


def wait_http(url: str, *, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s: {last!r}")


def poll(check: Callable[[], bool], timeout: float) -> bool:
    """Whether ``check()`` became true within ``timeout`` seconds (asked every 50 ms, and once at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def at_once(count: int, action: Callable[[int], None], *, join_timeout: float) -> list[BaseException]:
    """Run ``action(0)`` .. ``action(count - 1)``, each in its own thread, released together by a
    barrier; wait up to ``join_timeout`` seconds for each thread. The exceptions they raised."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait(timeout=30)
            action(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=join_timeout)
    return errors


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``check()`` is true; AssertionError naming ``what`` after ``timeout`` seconds."""
    if not poll(check, timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Workers:
    """``st-provider worker`` processes, each logging to its own file; all stopped at the end."""

    env: dict[str, str]
    logs: Path
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"worker-{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "provider.cli", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        self.running.append(process)
        return process

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        """Wait until worker ``name`` logged that it started (its imports can take seconds).

        Needs the JSON log format (``ST_PROVIDER_LOG_FORMAT=json``) in ``env``.
        """
        log = self.logs / f"worker-{name}.log"
        wait_until(
            lambda: log.exists() and '"worker.started"' in log.read_text(errors="replace"), timeout, name
        )

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        return stop_process(process)

    def stop_all(self) -> list[int]:
        return [self.stop(p) for p in self.running]


def start_serve(
    env: Mapping[str, str], log_path: Path, *, workers: int = 2, extra_args: tuple[str, ...] = ()
) -> ServerProcess:
    """Start `st-provider serve` with gunicorn on a free loopback port, without waiting for it.

    The caller waits (``wait_http(f"{server.url}/healthz", process=server.process)``) and stops it
    (``server.stop()``); :func:`serve` does both.
    """
    port = free_port()
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "provider.cli",
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                *extra_args,
            ],
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    return ServerProcess(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)


@contextmanager
def serve(
    env: Mapping[str, str], log_path: Path, *, workers: int = 2, extra_args: tuple[str, ...] = ()
) -> Iterator[ServerProcess]:
    """Start `st-provider serve` with gunicorn on a free loopback port; stop it afterwards."""
    server = start_serve(env, log_path, workers=workers, extra_args=extra_args)
    try:
        wait_http(f"{server.url}/healthz", process=server.process)
        yield server
    finally:
        server.stop()
