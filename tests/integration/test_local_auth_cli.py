"""`st-provider users ...` as real processes: passwords come from stdin, never argv."""

from __future__ import annotations

import pytest

from provider.auth.local import LocalAuthenticator
from provider.auth.throttle import Throttle
from provider.db.session import Database
from provider.errors import AuthenticationFailed
from provider.settings import ThrottleSettings
from tests.support import base_env, run_cli


def test_user_management_round_trip(sqlite_url: str) -> None:
    env = base_env(sqlite_url)
    added = run_cli(
        [
            "users",
            "add",
            "Jürgen",
            "--email",
            "j@example.org",
            "--display-name",
            "Jürgen M",
            "--group",
            "Support",
        ],
        env,
        input_text="Pässwort-lang-1\n",
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added Jürgen"
    assert "Pässwort" not in added.stdout + added.stderr

    listed = run_cli(["users", "list"], env)
    assert listed.returncode == 0, listed.stderr
    assert (
        "Jürgen\tenabled\tj@example.org\t-\tJürgen M\tSupport\t-" in listed.stdout.splitlines()
    )  # no console role

    database = Database(sqlite_url)
    try:
        auth = LocalAuthenticator(database)
        assert auth.authenticate("jürgen", "Pässwort-lang-1").email == "j@example.org"

        changed = run_cli(["users", "passwd", "JÜRGEN"], env, input_text="Neues-Passwort-2\n")
        assert changed.returncode == 0, changed.stderr
        with pytest.raises(AuthenticationFailed):
            auth.authenticate("jürgen", "Pässwort-lang-1")
        assert auth.authenticate("jürgen", "Neues-Passwort-2").username == "Jürgen"

        assert run_cli(["users", "disable", "jürgen"], env).returncode == 0
        with pytest.raises(AuthenticationFailed) as disabled:
            auth.authenticate("jürgen", "Neues-Passwort-2")
        assert disabled.value.reason == "disabled"

        Throttle(database, ThrottleSettings()).record_failure(["user:jürgen"])
        unlocked = run_cli(["users", "unlock", "EXAMPLE\\Jürgen"], env)
        assert unlocked.returncode == 0 and "unlocked" in unlocked.stdout

        removed = run_cli(["users", "remove", "jürgen"], env)
        assert removed.returncode == 0, removed.stderr
        assert auth.lookup("jürgen") is None
    finally:
        database.dispose()


def test_refusals_are_clear_and_exit_1(sqlite_url: str) -> None:
    env = base_env(sqlite_url)
    short = run_cli(["users", "add", "bob"], env, input_text="short\n")
    assert short.returncode == 1
    assert "at least 8 characters" in short.stderr
    missing = run_cli(["users", "remove", "nobody"], env)
    assert missing.returncode == 1
    assert "no local user 'nobody'" in missing.stderr


def test_there_is_no_password_option() -> None:
    result = run_cli(["users", "add", "bob", "--password", "secret123"], base_env("sqlite://"))
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr
