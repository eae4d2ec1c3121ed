"""Service connections shared safely by threads, and never across a fork (real slapd)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from provider.auth.base import dn_key
from provider.auth.ldap import LdapAuthenticator
from provider.errors import AuthenticationFailed
from provider.settings import Settings
from tests.fixtures.slapd import USERS, SlapdServer

pytestmark = pytest.mark.slapd

ACTIVE = ["alice", "bob", "jürgen", "pat", "erin", "carol"]


def make(slapd: SlapdServer) -> LdapAuthenticator:
    settings = Settings.from_mapping(slapd.settings())
    assert settings.ldap is not None
    return LdapAuthenticator(settings.ldap)


def round_trip(auth: LdapAuthenticator, rounds: int) -> list[str]:
    """Log every user in and look them up; returns a description of every wrong answer."""
    wrong = []
    for index in range(rounds):
        key = ACTIVE[index % len(ACTIVE)]
        user = USERS[key]
        identity = auth.authenticate(user.uid, user.password)
        if identity.email != user.mail or dn_key(identity.dn or "") != dn_key(user.dn):
            wrong.append(f"authenticate {key} -> {identity.dn}")
        found = auth.lookup(user.uid)
        if found is None or found.email != user.mail or set(found.groups) != set(user.groups):
            wrong.append(f"lookup {key} -> {found and found.dn}")
        try:
            auth.authenticate(user.uid, user.password + "-wrong")
            wrong.append(f"wrong password accepted for {key}")
        except AuthenticationFailed:
            pass
    return wrong


def test_threads_share_the_service_connections_without_crossed_answers(slapd: SlapdServer) -> None:
    auth = make(slapd)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: round_trip(auth, 12), range(8)))
    assert [w for r in results for w in r] == []
    # The pool kept some connections for the next requests, never more than its size.
    assert 1 <= len(auth.pool._idle) <= 8


def _child(auth: LdapAuthenticator, queue: multiprocessing.Queue[tuple[int, list[str]]]) -> None:
    try:
        queue.put((os.getpid(), round_trip(auth, 18)))
    except BaseException as exc:  # report, do not hang the parent
        queue.put((os.getpid(), [f"child failed: {exc!r}"]))


def test_connections_made_before_a_fork_are_not_shared(slapd: SlapdServer) -> None:
    # As under gunicorn --preload: the parent has pooled connections when it forks.
    auth = make(slapd)
    assert round_trip(auth, 6) == []
    assert auth.pool._idle
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[tuple[int, list[str]]] = context.Queue()
    children = [context.Process(target=_child, args=(auth, queue)) for _ in range(2)]
    for child in children:
        child.start()
    try:
        parent_wrong = round_trip(auth, 18)
        reports = [queue.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    assert parent_wrong == []
    assert [r for _, wrong in reports for r in wrong] == []
    assert all(child.exitcode == 0 for child in children)
    # The parent's own pooled connections still work after the children exit.
    assert round_trip(auth, 6) == []
