"""``st-provider serve``: gunicorn (buffering gthread workers) running :mod:`provider.app`.

Without ``--no-worker``, ``serve`` is a small parent of two children, ``serve --no-worker``
and ``worker``, sharing one metrics directory (:func:`supervise`). What happens, in
order, in the gunicorn master (``--no-worker``):

1. ``PROMETHEUS_MULTIPROC_DIR`` is pointed at a fresh temporary directory (or the one
   the parent handed down), before
   anything here imports ``prometheus_client`` (it reads the variable at import), so
   ``/metrics`` in any worker aggregates every worker;
2. pending migrations are applied once (on PostgreSQL under an advisory lock, so
   several instances starting together upgrade one at a time), in a forked child, so
   this process never imports Alembic (:mod:`provider.db.isolated`);
3. the application's modules are imported (nothing is built; not the console, which a
   worker builds on its first ``/admin`` request) and frozen out of the garbage
   collector's reach (``gc.freeze``: a worker's collections then do not copy the shared
   pages), then gunicorn forks the workers; each builds the WSGI application (database
   engine, domain provider, Spyne applications) after the fork, so no connection or lock
   is shared across processes (hence no ``preload_app``).

The process environment is written here for that one variable only, because the
Prometheus client library reads it from there; everything else comes from
:class:`~provider.settings.Settings`.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gunicorn.app.base import Application

from provider.db.isolated import apply_migrations
from provider.db.session import describe_url
from provider.errors import ConfigError
from provider.settings import Secret, Settings

log = logging.getLogger("provider.server")

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

WORKER_TIMEOUT: Final = 30
GRACEFUL_TIMEOUT: Final = 20
KEEPALIVE: Final = 5
# Requests are read whole in the worker's event loop before a thread sees them
# (provider/http_buffering.py): slow clients cannot hold the threads.
# Chosen by measurement against sync workers and other thread counts (issue 14): see
# deploy/README.md, "Worker class and threads".
WORKER_CLASS: Final = "provider.http_buffering.BufferingWorker"
# Connections per worker, those still being read included: with the request limits
# this bounds a worker's buffer memory (about WORKER_CONNECTIONS x max body size).
WORKER_CONNECTIONS: Final = 256
# Each worker is replaced after about this many requests (the jitter spreads the
# restarts), so memory a worker gains and never returns cannot grow for ever.
MAX_REQUESTS: Final = 20_000
MAX_REQUESTS_JITTER: Final = 2_000
# What ``serve`` decides even when a gunicorn configuration file is given.
REQUIRED_OPTIONS: Final = frozenset(
    {"worker_class", "preload_app", "child_exit", "control_socket_disable", "proc_name", "loglevel"}
)


def prepare_metrics_dir(inherited: str | None = None) -> tuple[str, bool]:
    """The multiprocess directory, exported as ``PROMETHEUS_MULTIPROC_DIR``; and whether we made it.

    ``inherited`` (the variable as this process received it) is used when it names an
    existing directory: ``serve`` with its embedded worker hands one directory to both
    children so /metrics shows the delivery counters too. Otherwise a fresh temporary
    directory is made (the caller removes it at the end). It must run before
    ``prometheus_client`` is first imported (the CLI imports only the serve command's
    module for that reason); if it was imported already, a warning says /metrics is per worker.
    """
    owned = not (inherited and os.path.isdir(inherited))
    path = tempfile.mkdtemp(prefix="st-provider-metrics-") if owned else str(inherited)
    os.environ[MULTIPROC_ENV] = path
    if "prometheus_client" in sys.modules:
        log.warning(
            "prometheus_client was imported before the metrics directory was set; /metrics is per worker",
            extra={"event": "server.metrics_late_import"},
        )
    return path, owned


def _child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: drop a dead worker's live gauges from the shared metrics."""
    if os.environ.get(MULTIPROC_ENV):
        # Imported here: this module must not import prometheus_client before the env is set.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def gunicorn_options(settings: Settings, *, bind: str, workers: int, threads: int) -> dict[str, Any]:
    """The gunicorn settings ``serve`` uses (timeouts on everything, no preloading).

    Workers are :class:`provider.http_buffering.BufferingWorker` (each request read
    whole, within ``settings.request_read_seconds``, before a thread gets it) and are
    recycled after ``MAX_REQUESTS`` (plus up to ``MAX_REQUESTS_JITTER``) requests.
    """
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "threads": threads,
        "worker_class": WORKER_CLASS,
        "worker_connections": WORKER_CONNECTIONS,
        "max_requests": MAX_REQUESTS,
        "max_requests_jitter": MAX_REQUESTS_JITTER,
        "preload_app": False,
        "timeout": WORKER_TIMEOUT,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": KEEPALIVE,
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        "proc_name": "st-provider",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "child_exit": _child_exit,
        # gunicorn >= 25 opens a control socket at one fixed per-user path; several
        # instances (and test servers) on one host would fight over it.
        "control_socket_disable": True,
    }
    # gunicorn's advice: heartbeat files in memory, so a slow disk cannot stall workers.
    if os.path.isdir("/dev/shm"):  # noqa: S108
        options["worker_tmp_dir"] = "/dev/shm"  # noqa: S108
    return options


class ChildProcess:
    """One child command, started again after a pause whenever it exits on its own.

    ``stop`` sends SIGTERM (a delivery worker finishes the send in progress), then
    SIGKILL after ``stop_timeout`` seconds.
    """

    RESTART_DELAY = 2.0

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], *, stop_timeout: float = 20.0
    ) -> None:
        self.name = name
        self._argv = list(argv)
        self._env = dict(env)
        self._stop_timeout = stop_timeout
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name=self.name, daemon=True)
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            self._process = subprocess.Popen(self._argv, env=self._env)
            return self._process

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            process = self._spawn()
            if process is None:
                return
            log.info(
                "embedded worker started",
                extra={"event": "server.worker_started", "pid": process.pid},
            )
            code = process.wait()
            if self._stopping.is_set():
                return
            log.error(
                "embedded worker exited; restarting",
                extra={"event": "server.worker_exited", "pid": process.pid, "returncode": code},
            )
            self._stopping.wait(self.RESTART_DELAY)

    def stopping(self) -> None:
        """From now on an exit is expected: do not start it again (safe in a signal handler)."""
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)


def cli_command(config_file: str | None, *args: str) -> list[str]:
    """``st-provider [--config FILE] ARGS`` with this interpreter."""
    config = ["--config", config_file] if config_file else []
    return [sys.executable, "-m", "provider.cli", *config, *args]


def supervise(web_argv: Sequence[str], worker_argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the web server and one delivery worker as two children until the web server ends.

    This process is their plain parent, not gunicorn's master: a thread in a master that
    forks its web workers would leak file descriptors and locks into them, and the master
    reaps every child it has. SIGTERM/SIGINT stop both (the web server first); SIGHUP is
    passed on to the web server (graceful reload). A delivery worker that dies is started
    again; the web server's exit ends everything. Returns the web server's exit status.
    """
    finished = threading.Event()
    web = subprocess.Popen(list(web_argv), env=dict(env))
    worker = ChildProcess("embedded-worker", worker_argv, env, stop_timeout=GRACEFUL_TIMEOUT)

    def forward(signum: int, _frame: Any) -> None:
        if web.poll() is None:
            web.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)
        if signum != signal.SIGHUP:
            worker.stopping()  # it may get the same signal from the terminal or a process group
            finished.set()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        worker.start()
        while web.poll() is None:
            finished.wait(0.5)
        return int(web.wait())
    finally:
        worker.stop()
        if web.poll() is None:
            web.terminate()
            web.wait(timeout=GRACEFUL_TIMEOUT + 10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class ProviderServer(Application):  # type: ignore[misc]
    """gunicorn running the provider's WSGI application, built in each worker."""

    def __init__(
        self,
        settings: Settings,
        options: Mapping[str, Any],
        *,
        metrics_dir: str | None,
        config_file: str | None = None,
    ) -> None:
        self.settings = settings
        self.config_file = config_file
        self.options = dict(options)
        self.metrics_dir = metrics_dir
        super().__init__()

    def load_config(self) -> None:
        # gunicorn's own loader (also on SIGHUP); then what serve decides wins.
        if self.config_file:
            self.load_config_from_file(self.config_file)
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # provider.app imports prometheus_client: only after prepare_metrics_dir().
        from provider.app import build_application

        return build_application(self.settings, metrics_dir=self.metrics_dir)


def _check_bind(bind: str) -> str:
    _, sep, port = bind.rpartition(":")
    valid_port = bool(sep) and port.isdigit() and 0 < int(port) < 65536
    if not valid_port and not bind.startswith("unix:"):
        raise ConfigError(f"--bind {bind!r}: expected HOST:PORT (or unix:PATH)")
    return bind


def serve(
    settings: Settings,
    *,
    bind: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    embedded_worker: bool = True,
    gunicorn_config: str | None = None,
    config_file: str | None = None,
) -> int:
    """Run the server until it is stopped (SIGTERM/SIGINT); returns the exit status.

    With ``embedded_worker`` a delivery worker runs beside the web server (both children
    of this process, started with ``config_file`` and the settings' environment; see
    :func:`supervise`), so the one-command quick start delivers events too.

    With ``gunicorn_config`` (a gunicorn configuration file such as
    deploy/gunicorn.conf.py) the file's settings apply; ``bind``, ``workers`` and
    ``threads`` given here, and :data:`REQUIRED_OPTIONS`, win over it.

    Raises ConfigError without the Web Service Password, with a bad bind address or a
    missing configuration file, StorageError when the database cannot be migrated.
    """
    settings.require_password()
    if gunicorn_config and not os.path.isfile(gunicorn_config):
        raise ConfigError(f"--gunicorn-config {gunicorn_config}: no such file")
    if bind:
        _check_bind(bind)
    if embedded_worker:
        return _serve_with_worker(
            settings,
            bind=bind,
            workers=workers,
            threads=threads,
            gunicorn_config=gunicorn_config,
            config_file=config_file,
        )
    return _serve_web(settings, bind=bind, workers=workers, threads=threads, gunicorn_config=gunicorn_config)


def _serve_web(
    settings: Settings,
    *,
    bind: str | None,
    workers: int | None,
    threads: int | None,
    gunicorn_config: str | None,
) -> int:
    """``serve --no-worker``: gunicorn in this process, with a metrics directory it removes when done."""
    explicit = {"bind": [bind] if bind else None, "workers": workers, "threads": threads}
    bind = _check_bind(bind or settings.bind)
    workers = workers or settings.workers
    threads = threads or settings.threads
    master = os.getpid()
    metrics_dir, owned = prepare_metrics_dir(settings.environment.get(MULTIPROC_ENV))
    try:
        _prepare_to_serve(settings)
        settings = _with_session_secret(settings)
        log.info(
            "starting",
            extra={
                "event": "server.start",
                "database": describe_url(settings.database_url),
                "bind": bind,
                "workers": workers,
                "threads": threads,
                "metrics_dir": metrics_dir,
            },
        )
        options = gunicorn_options(settings, bind=bind, workers=workers, threads=threads)
        if gunicorn_config:
            options = {k: v for k, v in options.items() if k in REQUIRED_OPTIONS}
            options.update({k: v for k, v in explicit.items() if v is not None})
        ProviderServer(settings, options, metrics_dir=metrics_dir, config_file=gunicorn_config).run()
        return 0
    finally:
        # Workers leave through here too (gunicorn forks inside run()): only the master cleans up.
        if os.getpid() == master and owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _with_session_secret(settings: Settings) -> Settings:
    """The settings with a console session secret: the configured one, else one made here, in the
    master, so every worker of this start signs and reads the same cookies (logged once)."""
    if not (settings.console.enabled or settings.otp.enabled) or settings.console.session_secret:
        return settings
    from provider.web.console import session_secret

    console = dataclasses.replace(settings.console, session_secret=Secret(session_secret(settings)))
    return dataclasses.replace(settings, console=console)


def _prepare_to_serve(settings: Settings) -> None:
    """Before gunicorn forks: migrate the database, warn about channel variables, import the app."""
    apply_migrations(settings.database_url)
    importlib.import_module("provider.channels.startup").warn_about_channel_variables(settings)
    importlib.import_module("provider.comms.signin_checks").warn_at_start(settings)
    # Import (but do not build) the application here: workers fork with the modules
    # loaded and boot quickly; importing opens no connection.
    # The console (Flask) is not imported here: a worker imports it on its first /admin request
    # (provider.app), so workers that only answer SOAP never hold it.
    importlib.import_module("provider.app")
    # What is loaded now is shared with every worker: moved out of the collector's reach, the
    # collector's passes in a worker do not write to (and so copy) those pages.
    gc.collect()
    gc.freeze()


def _serve_with_worker(
    settings: Settings,
    *,
    bind: str | None,
    workers: int | None,
    threads: int | None,
    gunicorn_config: str | None,
    config_file: str | None,
) -> int:
    """``serve`` plus one delivery worker: both as children of this process (see :func:`supervise`)."""
    # Before either child starts: the worker refuses a database behind the newest migration.
    apply_migrations(settings.database_url)
    metrics_dir = tempfile.mkdtemp(prefix="st-provider-metrics-")
    web_args = ["serve", "--no-worker"]
    for flag, value in (("--bind", bind), ("--workers", workers), ("--threads", threads)):
        if value:
            web_args += [flag, str(value)]
    if gunicorn_config:
        web_args += ["--gunicorn-config", gunicorn_config]
    try:
        return supervise(
            cli_command(config_file, *web_args),
            cli_command(config_file, "worker"),
            {**settings.environment, MULTIPROC_ENV: metrics_dir},
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
