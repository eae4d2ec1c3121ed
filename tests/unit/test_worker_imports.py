"""What a SOAP web worker imports (issue 14 goal 3): only what answering SOAP needs.

A web worker inherits every module gunicorn's master imported before forking it
(``provider.server._prepare_to_serve``) and imports what building and running the application
needs. Neither may bring in the migration tool (Alembic, Mako), the console's framework
(Flask, Werkzeug, Click: built on the first ``/admin`` request only), the LDAP client when no
directory is configured, or a partner client (see also ``test_channel_imports.py``).
Each check runs in a fresh interpreter and answers real requests through the WSGI application.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from provider.db.isolated import apply_migrations, require_migrated
from provider.errors import ConfigError, DatabaseMissing
from tests.support import REPO, WEB_SERVICE_PASSWORD

#: Never in a web worker that has not served ``/admin``.
NOT_IN_A_WEB_WORKER = (
    "alembic",
    "mako",
    "provider.db.migrate",
    "flask",
    "werkzeug",
    "click",
    "provider.web.console.app",
    "ldap3",
    "zeep",
    "httpx",
    "smtplib",
    "provider.channels.impl",
    "sqlalchemy.dialects.postgresql",  # these tests run on SQLite: PostgreSQL's dialect is not needed
)

WORKER = """
import json, sys
from provider.app import build_application
from provider.settings import Settings

password, database_url, page_path, extra = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
settings = Settings.from_mapping({"web_service_password": password, "database_url": database_url, **extra})
app = build_application(settings)
body = (
    '<?xml version="1.0" encoding="utf-8"?><soap:Envelope '
    'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    '<GetCustomFieldOptions xmlns="http://tempuri.org/"><inputs><InputVariables>'
    f'<string>authPW={password}</string><string>loginUsername=bob</string>'
    '</InputVariables></inputs></GetCustomFieldOptions></soap:Body></soap:Envelope>'
).encode()

def call(method, path, body=b"", content_type="text/xml; charset=utf-8"):
    import io
    status = []
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "localhost",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": content_type,
        "HTTP_SOAPACTION": '"http://tempuri.org/GetCustomFieldOptions"', "REMOTE_ADDR": "127.0.0.1",
    }
    answer = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    return int(status[0][:3]), answer

soap = call("POST", "/ExternalProvider.asmx", body)
health = call("GET", "/healthz")
metrics = call("GET", "/metrics")
before_page = [name for name in sys.argv[5:] if name in sys.modules]
page = call("GET", page_path)
print(json.dumps({
    "soap": [soap[0], b"Success>true<" in soap[1]],
    "health": health[0],
    "metrics": metrics[0],
    "loaded": before_page,
    "page": page[0],
    "flask_after_page": "flask" in sys.modules,
}))
"""

MASTER = """
import json, sys
from provider.server import _prepare_to_serve
from provider.settings import Settings

settings = Settings.from_mapping({"web_service_password": sys.argv[1], "database_url": sys.argv[2]})
_prepare_to_serve(settings)
print(json.dumps([name for name in sys.argv[3:] if name in sys.modules]))
"""


def _run(code: str, *args: str) -> object:
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_master_migrates_in_a_child_and_imports_nothing_a_worker_must_not_hold(tmp_path: Path) -> None:
    database = tmp_path / "master.db"
    loaded = _run(MASTER, WEB_SERVICE_PASSWORD, f"sqlite:///{database}", *NOT_IN_A_WEB_WORKER)
    assert loaded == []
    assert database.stat().st_size > 0  # migrated, by the child


def test_a_web_worker_answers_soap_without_the_console_or_migration_modules(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'worker.db'}"
    apply_migrations(database_url)
    report = _run(WORKER, WEB_SERVICE_PASSWORD, database_url, "/admin/", "{}", *NOT_IN_A_WEB_WORKER)
    assert report == {
        "soap": [200, True],
        "health": 200,
        "metrics": 200,
        "loaded": [],
        "page": 302,  # the sign-in page: the console was built on its first request
        "flask_after_page": True,
    }


def test_with_sign_in_codes_on_the_code_page_is_built_on_its_first_request(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'worker.db'}"
    apply_migrations(database_url)
    otp = json.dumps({"otp": "on", "otp_channel_email": "mail", "session_secret": "s" * 40})
    report = _run(WORKER, WEB_SERVICE_PASSWORD, database_url, "/signin-code", otp, *NOT_IN_A_WEB_WORKER)
    assert report == {
        "soap": [200, True],
        "health": 200,
        "metrics": 200,
        "loaded": [],
        "page": 200,  # the form
        "flask_after_page": True,
    }


def test_a_failed_migration_is_raised_in_the_parent_with_the_childs_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-directory' / 'x.db'}"
    with pytest.raises(DatabaseMissing, match=r"directory .*missing-directory does not exist"):
        apply_migrations(url)  # raised in the child, raised again here: same class, same message


def test_plain_gunicorn_workers_check_the_schema_in_a_child(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with pytest.raises(ConfigError, match="not at the newest migration"):
        require_migrated(url)
    apply_migrations(url)
    require_migrated(url)  # no error once migrated
    assert "alembic" not in _run(CHECK, url)


CHECK = """
import json, sys
from provider.db.isolated import require_migrated
require_migrated(sys.argv[1])
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in ("alembic", "mako"))))
"""
