"""Database set-up mistakes, as a new admin makes them, through real `st-provider` processes:
each says its cause without a traceback or a password, every command that uses the database
names it on stderr (stdout stays clean JSON/CSV), and no command but `serve`/`db upgrade`
quietly starts a new, empty SQLite file."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support import PG_ADMIN_DSN, WEB_SERVICE_PASSWORD, base_env, free_port, pg_url, run_cli

DB_PASSWORD = "Db-Pa55word-never-shown"


def assert_clean_failure(result: subprocess.CompletedProcess[str], status: int, *needles: str) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert DB_PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [["users", "list"], ["db", "upgrade"], ["rules", "list"]])
def test_a_sqlite_url_with_two_slashes_says_how_to_write_it(command: list[str], tmp_path: Path) -> None:
    result = run_cli(command, base_env("sqlite://st.db"), cwd=tmp_path)
    assert_clean_failure(
        result, 2, "is not a SQLite URL", "sqlite:///relative/path.db", "sqlite:////absolute"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_url_is_refused_without_repeating_it() -> None:
    result = run_cli(["users", "list"], base_env(f"postgresql://u:{DB_PASSWORD}@host:notaport/db"))
    assert_clean_failure(result, 2, "ST_PROVIDER_DATABASE_URL is not a database URL")


def test_postgresql_connection_refused_names_host_and_port() -> None:
    port = free_port()
    url = f"postgresql://st:{DB_PASSWORD}@127.0.0.1:{port}/st"
    result = run_cli(["users", "list"], base_env(url))
    assert_clean_failure(
        result,
        1,
        f"st-provider: database postgresql+psycopg://st:***@127.0.0.1:{port}/st",
        f"connection refused by 127.0.0.1:{port}",
    )


@pytest.mark.postgres
def test_postgresql_missing_database_and_unknown_user_are_named() -> None:
    missing = f"stp_missing_{uuid.uuid4().hex[:8]}"
    result = run_cli(["rules", "list"], base_env(pg_url(missing)))
    assert_clean_failure(result, 1, f"database '{missing}' does not exist at 127.0.0.1:5432")

    host = PG_ADMIN_DSN.split("@", 1)[1].rsplit("/", 1)[0]
    result = run_cli(["users", "list"], base_env(f"postgresql://nosuchuser:{DB_PASSWORD}@{host}/test"))
    assert_clean_failure(result, 1, "authentication failed: user 'nosuchuser' does not exist")


def test_a_missing_sqlite_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "provider.db"
    result = run_cli(["db", "upgrade"], base_env(f"sqlite:///{path}"))
    assert_clean_failure(result, 1, f"the directory {path.parent} does not exist")
    result = run_cli(["users", "list", "--create"], base_env(f"sqlite:///{path}"))
    assert_clean_failure(result, 1, f"the directory {path.parent} does not exist")


def test_a_directory_in_place_of_the_sqlite_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "provider.db").mkdir()
    result = run_cli(["db", "upgrade"], base_env(f"sqlite:///{tmp_path / 'provider.db'}"))
    assert_clean_failure(result, 1, f"{tmp_path / 'provider.db'} is a directory, not a SQLite file")


def test_admin_commands_from_another_directory_refuse_a_new_empty_database(tmp_path: Path) -> None:
    """The default database is relative to the working directory: `rules import` run
    elsewhere must not fill a new file the service never reads."""
    service_dir, elsewhere = tmp_path / "service", tmp_path / "elsewhere"
    service_dir.mkdir()
    elsewhere.mkdir()
    env = base_env("unused")
    del env["ST_PROVIDER_DATABASE_URL"]  # the default: sqlite:///st-provider.db
    assert run_cli(["db", "upgrade"], env, cwd=service_dir).returncode == 0
    assert (service_dir / "st-provider.db").exists()

    rules = Path(__file__).resolve().parents[2] / "rules" / "sample-provider.yaml"
    for command in (
        ["rules", "import", str(rules)],
        ["users", "list"],
        ["deliveries", "list"],
        ["worker", "--once"],
    ):
        result = run_cli(command, env, cwd=elsewhere)
        assert_clean_failure(
            result,
            1,
            f"st-provider: database sqlite:///{elsewhere / 'st-provider.db'}\n",
            f"the database file {elsewhere / 'st-provider.db'} does not exist",
            "--create",
        )
        assert list(elsewhere.iterdir()) == [], command

    # From the service's directory it is the service's database.
    imported = run_cli(["rules", "import", str(rules)], env, cwd=service_dir)
    assert imported.returncode == 0, imported.stderr
    assert f"st-provider: database sqlite:///{service_dir / 'st-provider.db'}" in imported.stderr

    # Asked to, a command starts a new database (migrated, so it works at once).
    created = run_cli(["users", "list", "--create"], env, cwd=elsewhere)
    assert created.returncode == 0, created.stderr
    assert f"created the database {elsewhere / 'st-provider.db'}" in created.stderr
    assert created.stdout.splitlines() == ["username\tstatus\temail\tphone\tdisplay name\tgroups\tconsole"]


def test_validate_needs_no_database_and_says_so(tmp_path: Path) -> None:
    rules = Path(__file__).resolve().parents[2] / "rules" / "sample-provider.yaml"
    result = run_cli(["rules", "validate", str(rules)], base_env(f"sqlite:///{tmp_path / 'none.db'}"))
    assert result.returncode == 0, result.stderr
    assert f"database sqlite:///{tmp_path / 'none.db'} (does not exist yet)" in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_the_database_line_goes_to_stderr_so_json_and_csv_stay_clean(database_url: str) -> None:
    env = base_env(database_url)
    listed = run_cli(["rules", "list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"version": 0, "rules": [], "channels": []}
    assert listed.stderr.startswith("st-provider: database ")
    deliveries = run_cli(["deliveries", "list", "--format", "csv"], env)
    assert deliveries.returncode == 0, deliveries.stderr
    assert "st-provider" not in deliveries.stdout  # no deliveries: empty CSV, nothing else
    assert deliveries.stderr.startswith("st-provider: database ")
    if "@" in database_url:
        assert "postgresql+psycopg://" in deliveries.stderr


def test_serve_also_explains_an_unreachable_database(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(f"postgresql://st:{DB_PASSWORD}@127.0.0.1:{port}/st")
    env["ST_PROVIDER_WEB_SERVICE_PASSWORD"] = WEB_SERVICE_PASSWORD
    result = run_cli(["serve", "--no-worker", "--bind", f"127.0.0.1:{free_port()}"], env)
    assert_clean_failure(result, 1, f"connection refused by 127.0.0.1:{port}")
