"""A fair, first-come queue for SQLite's single write lock, across threads and processes.

SQLite lets one connection write at a time. A connection that finds the lock taken does
not queue: its busy handler sleeps and tries again, sleeping longer each time (up to
100 ms a try), so under steady contention a writer can lose again and again while
newcomers win. With the SOAP workers (NotifyEventFired, the call journal) and a delivery
worker writing to one file, that made a few calls in a hundred wait hundreds of
milliseconds for a transaction that takes one.

:class:`WriteGate` queues writers instead. Before ``BEGIN IMMEDIATE`` a writer takes,
in order:

1. the process's lock (threads of one process wait in turn, each with its deadline);
2. an exclusive ``flock`` on a lock file beside the database (``<file>.write-lock``),
   which the kernel grants to the processes waiting for it as it is released, with no
   polling. A ``flock`` cannot time out, so the wait happens in the gate's own waiter
   thread; the writer waits for it with its deadline and, if it gives up, the waiter
   hands the lock to the next writer of this process, or lets it go.

The lock is released when the transaction has ended (committed or rolled back). A
process that dies releases its ``flock`` with it. The gate only orders this project's
own writers: any other program writing to the file still meets SQLite's busy handler,
as before. A lock file that cannot be opened or locked (a read-only directory, a file system
without ``flock``) leaves only the process's lock, with a warning (``db.write_gate_unavailable``);
SQLite's busy handler then orders the processes, as before.

Callers: :meth:`provider.db.session.Database.session` with ``immediate=True`` and
:meth:`~provider.db.session.Database.write_connection`. :class:`GateTimeout` means the
deadline passed; the caller turns it into the same :class:`~provider.errors.StorageError`
a busy SQLite file gives.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("provider.db")

LOCK_SUFFIX = ".write-lock"


class GateTimeout(Exception):
    """The write lock was not ours before the deadline (another writer held it throughout)."""


class _FileLock:
    """An exclusive ``flock`` taken by a waiter thread on behalf of this process's current writer."""

    def __init__(self, path: str) -> None:
        """Open (or create) the lock file; OSError if it cannot be opened or locked at all
        (a read-only directory, a file system or system call filter without ``flock``)."""
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except BlockingIOError:
            pass  # another process holds it: flock works here
        except OSError:
            os.close(self._fd)
            raise
        self._cond = threading.Condition(threading.Lock())
        self._pending = False  # the waiter thread is (or is about to be) blocked in flock
        self._wanted = False  # this process's writer waits for the waiter's result
        self._granted = False  # the waiter holds the lock for that writer
        self._waiter: threading.Thread | None = None

    def acquire(self, deadline: float) -> None:
        """Take the lock by ``deadline`` (monotonic), or raise GateTimeout having taken nothing."""
        with self._cond:
            if not self._pending and not self._granted:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    self._pending = True
                    self._start_waiter()
                    self._cond.notify_all()
            self._wanted = True
            try:
                while not self._granted:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise GateTimeout
                    self._cond.wait(remaining)
                self._granted = False
            finally:
                self._wanted = False

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)

    def _start_waiter(self) -> None:
        if self._waiter is None or not self._waiter.is_alive():
            self._waiter = threading.Thread(target=self._wait_loop, name="sqlite-write-gate", daemon=True)
            self._waiter.start()

    def _wait_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # blocks until another process lets go
            with self._cond:
                self._pending = False
                if self._wanted:
                    self._granted = True
                    self._cond.notify_all()
                else:  # the writer gave up meanwhile
                    fcntl.flock(self._fd, fcntl.LOCK_UN)


class WriteGate:
    """Orders one process's writers to one SQLite file, and that process among the others."""

    def __init__(self, database_path: str | None) -> None:
        self._local = threading.Lock()
        self._file: _FileLock | None = None
        if database_path:
            try:
                self._file = _FileLock(database_path + LOCK_SUFFIX)
            except OSError as exc:
                log.warning(
                    "SQLite write gate: no lock file; processes take turns through SQLite's busy handler",
                    extra={"event": "db.write_gate_unavailable", "error": type(exc).__name__},
                )
        self._pid = os.getpid()

    @contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        """Hold the write lock for the block; GateTimeout if it is not ours within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        if not self._local.acquire(timeout=max(0.0, timeout)):
            raise GateTimeout
        try:
            if self._file is not None:
                self._file.acquire(deadline)
            try:
                yield
            finally:
                if self._file is not None:
                    self._file.release()
        finally:
            self._local.release()

    def forget_inherited(self) -> None:
        """In a forked child: close the parent's lock file (its ``flock`` is the parent's)."""
        if self._file is not None and self._pid != os.getpid():
            self._file.close()
            self._file = None


class _Registry:
    """This process's gates by (pid, path); a forked child starts a new one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gates: dict[tuple[int, str], WriteGate] = {}

    def after_fork_in_child(self) -> None:
        inherited = list(self.gates.values())
        self.lock = threading.Lock()
        self.gates = {}
        for gate in inherited:
            gate.forget_inherited()


_REGISTRY = _Registry()


def gate_path(database: str | None) -> str:
    """The key :func:`gate_for` takes for a SQLite URL's database (resolve it once, not per write)."""
    return os.path.realpath(database) if database and database != ":memory:" else ""


def gate_for(path: str) -> WriteGate:
    """This process's gate for the SQLite file at ``path`` (from :func:`gate_path`; ``""``: in-process only)."""
    key = (os.getpid(), path)
    with _REGISTRY.lock:
        gate = _REGISTRY.gates.get(key)
        if gate is None:
            gate = _REGISTRY.gates[key] = WriteGate(path or None)
        return gate


os.register_at_fork(after_in_child=_REGISTRY.after_fork_in_child)
