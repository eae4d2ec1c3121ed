"""The SQLite write gate: writers of one file take turns across threads and processes.

Real processes (``spawn`` and ``fork``) and real ``flock`` locks on a temporary file; no timing
assertions beyond "waited until the other side let go" (ordering of events).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from provider.db import write_gate
from provider.db.session import Database
from provider.db.write_gate import GateTimeout, gate_for, gate_path
from provider.errors import StorageError


def _hold(
    path: str,
    seconds: float,
    started: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
) -> None:
    """In another process: hold the gate for ``seconds``; ``done`` is set just before letting go."""
    with gate_for(path).held(5):
        started.set()
        time.sleep(seconds)
        done.set()


class Holder:
    """Another process holding the gate of ``path`` for a while."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, path: str, seconds: float) -> None:
        started, self.done = ctx.Event(), ctx.Event()
        self.process = ctx.Process(target=_hold, args=(path, seconds, started, self.done))
        self.process.start()
        assert started.wait(30), "the holder process did not start"

    def still_holding(self) -> bool:
        return not self.done.is_set()

    def join(self) -> int | None:
        self.process.join(10)
        return self.process.exitcode


@pytest.fixture
def path(tmp_path: Path) -> str:
    return gate_path(str(tmp_path / "provider.db"))


def test_a_writer_waits_until_another_process_lets_go(path: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    holder = Holder(ctx, path, 0.5)
    try:
        with gate_for(path).held(10):
            got_it_while_held = holder.still_holding()
    finally:
        exitcode = holder.join()
    assert exitcode == 0
    assert not got_it_while_held


def test_a_writer_gives_up_at_its_deadline_and_the_next_one_still_gets_the_lock(path: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    holder = Holder(ctx, path, 0.8)
    gate = gate_for(path)
    try:
        with pytest.raises(GateTimeout), gate.held(0.1):
            pytest.fail("the gate was taken while another process held it")
        # The waiter thread still waits on our behalf; the next writer takes its turn from it.
        with gate.held(10):
            assert not holder.still_holding()
    finally:
        holder.join()
    # ...and once nobody wants it, the lock is not kept by this process.
    other = Holder(ctx, path, 0.0)
    assert other.join() == 0


def test_threads_of_one_process_never_hold_it_together(path: str) -> None:
    gate = gate_for(path)
    inside = [0]
    overlaps = [0]
    turns = [0]

    def writer() -> None:
        for _ in range(200):
            with gate.held(10):
                inside[0] += 1
                if inside[0] != 1:
                    overlaps[0] += 1
                time.sleep(0)
                turns[0] += 1
                inside[0] -= 1

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert overlaps[0] == 0
    assert turns[0] == 8 * 200


def _try_in_child(path: str, result: multiprocessing.queues.Queue[str]) -> None:
    try:
        with gate_for(path).held(0.2):
            result.put("taken")
    except GateTimeout:
        result.put("timeout")


def test_a_forked_child_does_not_inherit_its_parents_turn(path: str) -> None:
    ctx = multiprocessing.get_context("fork")
    result: multiprocessing.queues.Queue[str] = ctx.Queue()
    with gate_for(path).held(5):
        child = ctx.Process(target=_try_in_child, args=(path, result))
        child.start()
        answer = result.get(timeout=30)
        child.join(10)
    assert answer == "timeout"  # the parent still held it: the child had to wait
    child = ctx.Process(target=_try_in_child, args=(path, result))
    child.start()
    assert result.get(timeout=30) == "taken"
    child.join(10)


def test_an_immediate_session_waits_for_its_turn(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'provider.db'}")
    ctx = multiprocessing.get_context("spawn")
    holder = Holder(ctx, gate_path(str(tmp_path / "provider.db")), 0.5)
    try:
        with database.session(immediate=True):
            got_it_while_held = holder.still_holding()
        with database.write_connection():
            pass
    finally:
        holder.join()
        database.dispose()
    assert not got_it_while_held
    assert os.path.exists(str(tmp_path / "provider.db") + write_gate.LOCK_SUFFIX)


def test_a_turn_that_never_comes_is_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provider.db import session as session_module

    monkeypatch.setattr(session_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    database = Database(f"sqlite:///{tmp_path / 'provider.db'}")
    ctx = multiprocessing.get_context("spawn")
    holder = Holder(ctx, gate_path(str(tmp_path / "provider.db")), 1.0)
    try:
        with pytest.raises(StorageError, match="stayed locked"), database.session(immediate=True):
            pytest.fail("the session began while another process held the gate")
    finally:
        holder.join()
        database.dispose()


def test_a_directory_without_room_for_the_lock_file_leaves_the_process_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="provider.db"):
        gate = write_gate.WriteGate(str(tmp_path / "missing" / "provider.db"))
    assert [r.error for r in caplog.records if getattr(r, "event", None) == "db.write_gate_unavailable"] == [
        "FileNotFoundError"
    ]
    with gate.held(1), pytest.raises(GateTimeout):
        # the process's own lock still orders its threads
        threading.Thread(target=lambda: None).start()
        with gate.held(0.05):
            pass


def _die_holding_with_a_child(path: str, forked: multiprocessing.synchronize.Event) -> None:
    """In another process: take the gate, fork a long-lived child, then die without letting go."""
    with gate_for(path).held(5):
        child = os.fork()
        if child == 0:
            time.sleep(3)
            os._exit(0)
        forked.set()
        os._exit(0)


def test_a_writer_that_dies_lets_go_even_if_its_forked_child_lives_on(path: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    forked = ctx.Event()
    process = ctx.Process(target=_die_holding_with_a_child, args=(path, forked))
    process.start()
    assert forked.wait(30)
    # Not join(): it also waits for the grandchild, which holds the sentinel pipe.
    for _ in range(200):
        if process.exitcode is not None:
            break
        time.sleep(0.01)
    assert process.exitcode == 0
    with gate_for(path).held(1.5):  # the child (alive for 3 s) closed its copy of the lock file at the fork
        pass
