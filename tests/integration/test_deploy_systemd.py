"""deploy/systemd/: the units parse, carry the required keys and hardening, and pass
``systemd-analyze verify`` and ``systemd-analyze security --offline`` where that tool exists."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_deploy_gunicorn import load_config
from tests.support import REPO

SYSTEMD = REPO / "deploy" / "systemd"
SERVE = "st-provider.service"
WORKER = "st-provider-worker@.service"
MIGRATE = "st-provider-migrate.service"
UNITS = (SERVE, WORKER, MIGRATE)
BINARY = "/opt/st-provider/bin/st-provider"
STATE_DIR = "/var/lib/st-provider"
ENV_FILE = "/etc/st-provider/st-provider.env"
# Exposure score (0-10) systemd-analyze security may give at most.
MAX_EXPOSURE = 2.0

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(path: Path) -> Unit:
    """systemd unit syntax: [Section], Key=Value, repeated keys kept in order, # and ; comments."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}:{number}: key outside a section"
        assert "=" in line and not line.endswith("\\"), f"{path.name}:{number}: not Key=Value: {raw!r}"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}: expected one value, found {found}"
    return found[0]


def exec_argv(unit: Unit) -> list[str]:
    """The st-provider arguments of ExecStart (without the binary)."""
    argv = shlex.split(one(unit, "Service", "ExecStart"))
    assert argv[0] == BINARY
    return argv[1:]


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    return {name: parse_unit(SYSTEMD / name) for name in UNITS}


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ReadWritePaths": STATE_DIR,
    "StateDirectory": "st-provider",
    "UMask": "0077",
    "SystemCallArchitectures": "native",
    "User": "st-provider",
    "Group": "st-provider",
    "EnvironmentFile": ENV_FILE,
    "WorkingDirectory": STATE_DIR,
}


@pytest.mark.parametrize("name", UNITS)
def test_every_unit_is_hardened_and_runs_as_the_service_user(units: dict[str, Unit], name: str) -> None:
    unit = units[name]
    for key, expected in HARDENING.items():
        assert one(unit, "Service", key) == expected, f"{name}: {key}"
    assert one(unit, "Service", "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    filters = values(unit, "Service", "SystemCallFilter")
    assert filters[0] == "@system-service"
    assert any(f.startswith("~") and "@privileged" in f for f in filters[1:])
    assert "network-online.target" in one(unit, "Unit", "Wants")


@pytest.mark.parametrize("name", [SERVE, WORKER])
def test_long_running_units_restart_and_stop_gracefully(units: dict[str, Unit], name: str) -> None:
    unit = units[name]
    assert one(unit, "Service", "Type") == "simple"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert float(one(unit, "Service", "RestartSec")) > 0
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    # Stop waits longer than gunicorn lets requests in flight finish.
    assert int(one(unit, "Service", "TimeoutStopSec")) > load_config().graceful_timeout
    assert int(one(unit, "Unit", "StartLimitBurst")) > 0
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    # Migrations first: required and ordered before.
    assert MIGRATE in one(unit, "Unit", "Requires").split()
    assert MIGRATE in one(unit, "Unit", "After").split()


def test_the_service_runs_serve_without_the_embedded_worker(units: dict[str, Unit]) -> None:
    argv = exec_argv(units[SERVE])
    assert argv[0] == "serve" and "--no-worker" in argv
    assert argv[argv.index("--gunicorn-config") + 1] == "/etc/st-provider/gunicorn.conf.py"
    assert one(units[SERVE], "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"


def test_the_worker_template_gives_each_instance_its_own_metrics_port(units: dict[str, Unit]) -> None:
    argv = exec_argv(units[WORKER])
    assert argv[0] == "worker"
    assert argv[argv.index("--metrics-bind") + 1] == "127.0.0.1:%i"


def test_migrations_are_a_oneshot_before_the_others(units: dict[str, Unit]) -> None:
    unit = units[MIGRATE]
    assert one(unit, "Service", "Type") == "oneshot"
    assert one(unit, "Service", "RemainAfterExit") == "no"
    assert exec_argv(unit) == ["db", "upgrade"]
    assert SERVE in one(unit, "Unit", "Before").split()


def test_the_sqlite_database_of_the_example_is_writable(units: dict[str, Unit]) -> None:
    env = dict(
        line.split("=", 1)
        for line in (SYSTEMD / "st-provider.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    url = env["ST_PROVIDER_DATABASE_URL"]
    assert url.startswith("sqlite:////")
    database = Path(url.removeprefix("sqlite:///"))
    for name in UNITS:
        writable = values(units[name], "Service", "ReadWritePaths")
        assert any(database.is_relative_to(path) for path in writable), name


def test_the_environment_file_tells_to_keep_it_private() -> None:
    text = (SYSTEMD / "st-provider.env").read_text()
    assert "-m 0600" in text
    assert "ST_PROVIDER_WEB_SERVICE_PASSWORD=" in text


def test_the_service_user_is_declared() -> None:
    fields = (SYSTEMD / "st-provider.sysusers.conf").read_text().splitlines()[-1].split()
    assert fields[:2] == ["u", "st-provider"]
    assert fields[-1] == "/usr/sbin/nologin"


# --- systemd-analyze -----------------------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units, with the binary path pointed at an executable that exists here."""
    binary = shutil.which("st-provider")
    assert binary, "st-provider is not installed"
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert BINARY in text
        (tmp_path / name).write_text(text.replace(BINARY, binary))
    return tmp_path


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@needs_analyze
def test_systemd_analyze_verify_is_clean(unit_dir: Path) -> None:
    result = _analyze("verify", "--man=no", SERVE, MIGRATE, "st-provider-worker@9101.service", cwd=unit_dir)
    # Unknown keys are only warnings (exit 0): any output is a failure here.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


@needs_analyze
@pytest.mark.parametrize("name", [SERVE, MIGRATE, "st-provider-worker@9101.service"])
def test_systemd_analyze_security_rates_the_units_ok(unit_dir: Path, name: str) -> None:
    result = _analyze(
        "security",
        "--offline=true",
        "--no-pager",
        f"--threshold={int(MAX_EXPOSURE * 10)}",
        name,
        cwd=unit_dir,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "Overall exposure level" in result.stdout
