"""gunicorn configuration for the SmarterTrack External Provider (production).

Two ways to use it, with the same result:

* ``st-provider serve --no-worker --gunicorn-config /etc/st-provider/gunicorn.conf.py``
  (or ``ST_PROVIDER_GUNICORN_CONFIG``): ``serve`` applies migrations, then runs
  gunicorn with these settings; flags given on its command line win over the file.
* plain gunicorn: ``gunicorn -c deploy/gunicorn.conf.py`` (the application is
  ``wsgi_app`` below). Run ``st-provider db upgrade`` first: the application refuses
  to start on a database that is not at the newest migration.

Sizing, read once at start (and again on ``SIGHUP``):

* ``workers``: ``ST_PROVIDER_WORKERS``, else ``WEB_CONCURRENCY``, else
  ``2 x CPUs + 1`` (CPUs this process may use: CPU affinity and the cgroup CPU quota
  of a container), at most ``MAX_AUTO_WORKERS``;
* ``threads`` per worker: ``ST_PROVIDER_THREADS``, else 4. SOAP calls spend most of
  their time waiting on LDAP and the database, so threads overlap those waits while
  the processes use the CPUs; measured, a request's CPU cost is the same from 1 to 8
  threads and 1 thread queues requests (deploy/README.md, "Worker class and threads").
  Each worker holds up to ``threads`` database
  connections: keep ``hosts x workers x threads`` under PostgreSQL's ``max_connections``;
* ``bind``: ``ST_PROVIDER_BIND``, else ``127.0.0.1:8080`` (behind nginx on the same host);
* ``forwarded_allow_ips``: ``FORWARDED_ALLOW_IPS`` (gunicorn's own variable), else
  loopback. Only those peers may set ``X-Forwarded-Proto`` (which makes the WSDL
  address ``https://``); list the reverse proxy's addresses, never ``*`` unless a
  firewall or NetworkPolicy already lets only the proxy reach this port;
* ``accesslog``: ``GUNICORN_ACCESSLOG`` (a path, ``-`` for stdout, ``off``), else stdout.
  The format logs the path without the query string, no cookies, no Authorization,
  no Referer; the ``X-Request-Id`` column matches the ``soap.call`` log line.

Graceful reload: ``kill -HUP <master pid>`` (``systemctl reload st-provider``) re-reads
this file, starts new workers and lets the old ones finish their requests. A new
release of the package or a changed environment needs a restart instead.

Only names of gunicorn settings are read from this module; helpers start with ``_``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MAX_AUTO_WORKERS = 12
DEFAULT_THREADS = 4
_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METRICS_PREFIX = "st-provider-metrics-"


def _available_cpus() -> int:
    """CPUs this process may run on: affinity, capped by a cgroup v2/v1 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "150000 100000"
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        limit_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if limit_us <= 0 else limit_us / period_us
    except (OSError, ValueError):
        return None


def _positive_env(*names: str) -> int | None:
    """The first of ``names`` set in the environment, as a positive int (else a clear error)."""
    for name in names:
        raw = os.environ.get(name, "").strip()
        if raw:
            value = int(raw) if raw.isdigit() else 0
            if value <= 0:
                raise ValueError(f"{name}={raw!r}: must be a positive whole number")
            return value
    return None


def _accesslog() -> str | None:
    raw = os.environ.get("GUNICORN_ACCESSLOG", "-").strip()
    return None if raw.lower() in {"", "off", "none", "false", "0"} else raw


# --- the application (plain gunicorn only; ``serve`` loads its own) -----------------------
wsgi_app = "provider.cli:wsgi_application()"

# --- sockets and processes ------------------------------------------------------------------
bind = [os.environ.get("ST_PROVIDER_BIND", "").strip() or "127.0.0.1:8080"]
# gthread, with each request read whole (headers and body, within
# ST_PROVIDER_REQUEST_READ_SECONDS, else 408) before a thread gets it: slow clients
# cannot hold the threads even without nginx in front. See deploy/README.md.
worker_class = "provider.http_buffering.BufferingWorker"
# Connections per worker, including those still being read (bounds buffer memory).
worker_connections = 256
workers = _positive_env("ST_PROVIDER_WORKERS", "WEB_CONCURRENCY") or min(
    2 * _available_cpus() + 1, MAX_AUTO_WORKERS
)
threads = _positive_env("ST_PROVIDER_THREADS") or DEFAULT_THREADS
# Each worker builds the application (database engine, metrics) after the fork: no
# connection, thread or lock is shared. (``serve`` imports the modules before the fork and
# freezes them for copy-on-write sharing instead; benchmarks/README.md, worker_memory.py.)
preload_app = False
# Recycle workers now and then (jitter keeps them from restarting together).
max_requests = 20_000
max_requests_jitter = 2_000
proc_name = "st-provider"
# Worker heartbeats in memory, so a slow disk cannot get workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
# gunicorn >= 25 opens a control socket at one fixed per-user path; not needed here.
control_socket_disable = True

# --- timeouts -------------------------------------------------------------------------------
# A worker silent this long is killed and replaced (LDAP and the database time out sooner).
timeout = 30
# On stop or reload, requests in flight get this long to finish (systemd's TimeoutStopSec
# and Kubernetes' terminationGracePeriodSeconds are longer).
graceful_timeout = 25
# Idle keep-alive connections are closed after this many seconds: longer than nginx's
# upstream keepalive_timeout (4s in deploy/nginx), so nginx always closes first.
keepalive = 5

# --- request limits (the body limit is the application's: ST_PROVIDER_MAX_BODY_BYTES) -------
limit_request_line = 4094
limit_request_fields = 64
limit_request_field_size = 8190

# --- reverse proxy --------------------------------------------------------------------------
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "").strip() or "127.0.0.1,::1"
# Trust only the one header deploy/nginx sets (others could disagree and fail requests).
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# --- logging --------------------------------------------------------------------------------
errorlog = "-"
loglevel = "info"
accesslog = _accesslog()
# Peer, forwarded-for chain, method, path WITHOUT query string, protocol, status, bytes,
# milliseconds, request id, user agent. Never %(r)s or %(q)s (query string), %(u)s,
# %(f)s, or request headers that can carry credentials (Authorization, Cookie).
access_log_format = (
    '%(h)s fwd="%({x-forwarded-for}i)s" "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms '
    'rid=%({x-request-id}o)s ua="%(a)s"'
)


# --- hooks ----------------------------------------------------------------------------------
def on_starting(server: Any) -> None:
    """Give the workers a shared Prometheus directory (``serve`` has already set one)."""
    if not os.environ.get(_METRICS_ENV):
        os.environ[_METRICS_ENV] = tempfile.mkdtemp(prefix=_METRICS_PREFIX)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the shared metrics."""
    if os.environ.get(_METRICS_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory made by ``on_starting`` (never one the operator chose)."""
    path = os.environ.get(_METRICS_ENV, "")
    if Path(path).name.startswith(_METRICS_PREFIX) and Path(path).parent == Path(tempfile.gettempdir()):
        shutil.rmtree(path, ignore_errors=True)
