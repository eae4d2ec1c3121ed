"""Fork hooks are registered once per module, never once per instance (issue 10).

``os.register_at_fork`` hooks cannot be removed: one per ``Directory`` would pile up for
the life of the process. The hook is registered when the module is imported; building
pools afterwards registers nothing, and a forked child still resets every live pool.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import pytest

from provider.auth import directory
from provider.settings import LdapSettings


def test_building_pools_registers_no_fork_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[Callable[[], object]] = []

    def record(**hooks: Callable[[], object]) -> None:
        registered.extend(hooks.values())

    monkeypatch.setattr(os, "register_at_fork", record)
    pools = [directory.Directory(LdapSettings(urls=("ldap://127.0.0.1:1",))) for _ in range(3)]
    assert registered == []
    assert all(pool in directory._LIVE for pool in pools)


def test_a_forked_child_resets_every_live_pool() -> None:
    pools = [directory.Directory(LdapSettings(urls=("ldap://127.0.0.1:1",))) for _ in range(2)]
    with warnings.catch_warnings():  # other tests may have left threads: the child uses none
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: each pool belongs to this process now
        os._exit(0 if all(pool._pid == os.getpid() for pool in pools) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
