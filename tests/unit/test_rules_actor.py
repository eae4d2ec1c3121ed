"""Who a rules change is recorded as: --actor, else SUDO_USER, else the login name, with the host."""

from __future__ import annotations

import os
import pwd
import socket

from provider.rules.cli_support import actor


def _login() -> str:
    try:
        return os.getlogin()
    except OSError:
        return pwd.getpwuid(os.getuid()).pw_name


def test_explicit_actor_wins_and_is_tidied() -> None:
    assert actor("  Jane   Admin ", {"SUDO_USER": "alice"}) == "Jane Admin"


def test_the_person_behind_sudo_not_the_service_account() -> None:
    assert actor(None, {"SUDO_USER": "alice", "USER": "st-provider"}) == f"alice@{socket.gethostname()}"


def test_else_the_login_name() -> None:
    host = socket.gethostname()
    assert actor(None, {}) == f"{_login()}@{host}"
    assert actor("  ", {"SUDO_USER": " "}) == f"{_login()}@{host}"
