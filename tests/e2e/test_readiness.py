"""Liveness and readiness through gunicorn: /readyz follows the directory, /healthz does not."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fixtures.slapd import SlapdServer
from tests.support import base_env, free_port, serve

pytestmark = [pytest.mark.e2e, pytest.mark.slapd]


def probe(url: str) -> tuple[int, dict[str, str]]:
    response = httpx.get(url, timeout=30)
    return response.status_code, response.json()


def test_ready_with_a_reachable_directory(slapd: SlapdServer, sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(sqlite_url, **slapd.env())
    with serve(env, tmp_path / "server.log", workers=1) as server:
        assert probe(f"{server.url}/readyz") == (200, {"status": "ok", "database": "ok", "directory": "ok"})
        assert probe(f"{server.url}/healthz") == (200, {"status": "ok"})


def test_not_ready_while_the_directory_is_down_but_still_alive(
    slapd: SlapdServer, sqlite_url: str, tmp_path: Path
) -> None:
    env = base_env(sqlite_url, **slapd.env(ldap_url=f"ldap://127.0.0.1:{free_port()}", ldap_timeout="1"))
    with serve(env, tmp_path / "server.log", workers=1) as server:
        status, body = probe(f"{server.url}/readyz")
        assert status == 503
        assert body == {"status": "unavailable", "database": "ok", "directory": "unreachable"}
        assert probe(f"{server.url}/healthz")[0] == 200


def test_ready_without_a_directory(sqlite_url: str, tmp_path: Path) -> None:
    with serve(base_env(sqlite_url), tmp_path / "server.log", workers=1) as server:
        assert probe(f"{server.url}/readyz") == (200, {"status": "ok", "database": "ok"})
