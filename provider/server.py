"""``st-provider serve``: gunicorn (gthread workers) running :mod:`provider.app`.

What happens, in order, in the master process:

1. ``PROMETHEUS_MULTIPROC_DIR`` is pointed at a fresh temporary directory, before
   anything here imports ``prometheus_client`` (it reads the variable at import), so
   ``/metrics`` in any worker aggregates every worker;
2. pending migrations are applied once (on PostgreSQL under an advisory lock, so
   several instances starting together upgrade one at a time) and the engine used
   for that is disposed;
3. the application's modules are imported (nothing is built), then gunicorn forks
   the workers; each builds the WSGI application (database engine, domain provider,
   Spyne applications) after the fork, so no connection or lock is shared across
   processes.

The process environment is written here for that one variable only, because the
Prometheus client library reads it from there; everything else comes from
:class:`~provider.settings.Settings`.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from typing import Any, Final

from gunicorn.app.base import Application
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from provider.db.migrate import upgrade
from provider.db.session import create_db_engine
from provider.errors import ConfigError, StorageError
from provider.settings import Settings

log = logging.getLogger("provider.server")

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# pg_advisory_lock key held while migrating ("st-provider migrate", as a bigint).
MIGRATION_LOCK_KEY: Final = 0x5354_5052_4D49_4752
MIGRATION_LOCK_TIMEOUT: Final = "120s"

WORKER_TIMEOUT: Final = 30
GRACEFUL_TIMEOUT: Final = 20
KEEPALIVE: Final = 5
# What ``serve`` decides even when a gunicorn configuration file is given.
REQUIRED_OPTIONS: Final = frozenset(
    {"worker_class", "preload_app", "child_exit", "control_socket_disable", "proc_name", "loglevel"}
)


def prepare_metrics_dir() -> str:
    """Create a fresh multiprocess directory and export it as ``PROMETHEUS_MULTIPROC_DIR``.

    If ``prometheus_client`` was imported before (by some other command module), its
    value class is switched to the multiprocess one so the workers still share counts.
    """
    path = tempfile.mkdtemp(prefix="st-provider-metrics-")
    os.environ[MULTIPROC_ENV] = path
    _adopt_multiprocess_values()
    return path


def _adopt_multiprocess_values() -> None:
    values = sys.modules.get("prometheus_client.values")
    if values is None:
        return
    values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]
    registry = sys.modules["prometheus_client.registry"].REGISTRY
    for collector in list(registry._collector_to_names):
        # Unlabelled metrics made their value at import time; labelled ones make theirs per label set.
        if getattr(collector, "_labelnames", None) == () and hasattr(collector, "_metric_init"):
            collector._metric_init()
    log.warning(
        "prometheus_client was imported before the metrics directory was set; adopted it",
        extra={"event": "server.metrics_late_import"},
    )


def apply_migrations(database_url: str) -> None:
    """Bring the database to the newest migration, once, safely across instances.

    Raises StorageError when the database cannot be reached or the upgrade fails.
    """
    engine = create_db_engine(database_url)
    try:
        if engine.dialect.name != "postgresql":
            upgrade(database_url)
            return
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"SET lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'"))
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                upgrade(database_url)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot migrate the database: {type(exc).__name__}") from exc
    finally:
        engine.dispose()


def _child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: drop a dead worker's live gauges from the shared metrics."""
    if os.environ.get(MULTIPROC_ENV):
        # Imported here: this module must not import prometheus_client before the env is set.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def gunicorn_options(settings: Settings, *, bind: str, workers: int, threads: int) -> dict[str, Any]:
    """The gunicorn settings ``serve`` uses (timeouts on everything, no preloading)."""
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
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


class ProviderServer(Application):  # type: ignore[misc]
    """gunicorn running the provider's WSGI application, built in each worker."""

    def __init__(
        self,
        settings: Settings,
        options: Mapping[str, Any],
        *,
        metrics_dir: str | None,
        embedded_worker: bool = True,
        config_file: str | None = None,
    ) -> None:
        self.settings = settings
        self.config_file = config_file
        self.options = dict(options)
        self.metrics_dir = metrics_dir
        # Whether this server should also run the event delivery worker (``--no-worker``
        # turns it off); wired up by the events capability.
        self.embedded_worker = embedded_worker
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
) -> int:
    """Run the server until it is stopped (SIGTERM/SIGINT); returns the exit status.

    With ``gunicorn_config`` (a gunicorn configuration file such as
    deploy/gunicorn.conf.py) the file's settings apply; ``bind``, ``workers`` and
    ``threads`` given here, and :data:`REQUIRED_OPTIONS`, win over it.

    Raises ConfigError without the Web Service Password, with a bad bind address or a
    missing configuration file, StorageError when the database cannot be migrated.
    """
    settings.require_password()
    if gunicorn_config and not os.path.isfile(gunicorn_config):
        raise ConfigError(f"--gunicorn-config {gunicorn_config}: no such file")
    explicit = {"bind": [_check_bind(bind)] if bind else None, "workers": workers, "threads": threads}
    bind = _check_bind(bind or settings.bind)
    workers = workers or settings.workers
    threads = threads or settings.threads
    master = os.getpid()
    metrics_dir = prepare_metrics_dir()
    try:
        apply_migrations(settings.database_url)
        # Import (but do not build) the application here: workers fork with the modules
        # loaded and boot quickly; importing opens no connection.
        importlib.import_module("provider.app")
        log.info(
            "starting",
            extra={
                "event": "server.start",
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
        ProviderServer(
            settings,
            options,
            metrics_dir=metrics_dir,
            embedded_worker=embedded_worker,
            config_file=gunicorn_config,
        ).run()
        return 0
    finally:
        # Workers leave through here too (gunicorn forks inside run()): only the master cleans up.
        if os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
