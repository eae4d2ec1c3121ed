"""The deployment files agree with the code: every ``st-provider`` command line they run
parses with the real CLI, every ``ST_PROVIDER_*`` name they set is a real setting, and the
Containerfile builds an image that can run its own migrations."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from provider.cli import build_parser
from provider.errors import ConfigError
from provider.settings import ENV_PREFIX, Settings
from tests.support import REPO, base_env, run_cli

DEPLOY = REPO / "deploy"
CONTAINERFILE = DEPLOY / "Containerfile"
UNIT_BINARY = "/opt/st-provider/bin/st-provider"


def _unit_commands() -> list[tuple[str, list[str]]]:
    found = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = shlex.split(line.removeprefix("ExecStart=").replace("%i", "9101"))
                assert argv[0] == UNIT_BINARY, unit.name
                found.append((unit.name, argv[1:]))
    return found


def _kubernetes_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Deployment", "Job"):
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    assert "command" not in container, "the image's entrypoint is st-provider"
                    found.append((f"{path.name}:{container['name']}", [str(a) for a in container["args"]]))
    return found


def _containerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _containerfile_command() -> list[tuple[str, list[str]]]:
    (cmd,) = [json.loads(arg) for name, arg in _containerfile_instructions() if name == "CMD"]
    return [("Containerfile CMD", cmd)]


def _readme_commands() -> list[tuple[str, list[str]]]:
    found = []
    for line in (DEPLOY / "README.md").read_text().splitlines():
        match = re.match(r"^\s*st-admin (.+?)(\s+#.*)?$", line)
        if match:
            found.append((f"README: {line.strip()}", shlex.split(match.group(1))))
    assert found, "the README shows no st-admin example"
    return found


COMMANDS = _unit_commands() + _kubernetes_commands() + _containerfile_command() + _readme_commands()


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_every_deployed_command_line_parses(where: str, argv: list[str]) -> None:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports on stderr and exits 2
        pytest.fail(f"{where}: `st-provider {shlex.join(argv)}` does not parse (exit {exc.code})")
    assert callable(args.handler)


def test_the_gunicorn_config_path_is_the_one_installed() -> None:
    paths = {argv[argv.index("--gunicorn-config") + 1] for _, argv in COMMANDS if "--gunicorn-config" in argv}
    copied = [
        arg.split()[-1]
        for name, arg in _containerfile_instructions()
        if name == "COPY" and "gunicorn.conf.py" in arg
    ]
    assert paths == {"/etc/st-provider/gunicorn.conf.py", *copied}, paths
    assert copied == ["/app/deploy/gunicorn.conf.py"]


# --- settings names ------------------------------------------------------------------------


def _env_file_settings(path: Path) -> dict[str, str]:
    """ST_PROVIDER_* lines of an env file, the commented-out examples included."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(rf"^#?({ENV_PREFIX}[A-Z0-9_]+)=(.*)$", line.strip())
        if match:
            values[match.group(1)] = match.group(2) or "placeholder"
    return values


def _kubernetes_settings(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for doc in yaml.safe_load_all(path.read_text()):
        values.update({k: str(v) for k, v in (doc.get("data") or doc.get("stringData") or {}).items()})
    for line in path.read_text().splitlines():
        match = re.match(rf"^\s*#\s*({ENV_PREFIX}[A-Z0-9_]+):\s*\"?([^\"]*)\"?\s*$", line)
        if match:
            values[match.group(1)] = match.group(2) or "placeholder"
    return {k: v for k, v in values.items() if k.startswith(ENV_PREFIX)}


SERVICE_PASSWORDS = (f"{ENV_PREFIX}WEB_SERVICE_PASSWORD", f"{ENV_PREFIX}PREVIOUS_WEB_SERVICE_PASSWORD")
A_REAL_PASSWORD = "Xq3-a-real-random-value-9Lm"
SESSION_SECRET = f"{ENV_PREFIX}SESSION_SECRET"
A_REAL_SESSION_SECRET = "k2V9-a-real-random-session-key-0123456789"


def _settings(values: dict[str, str]) -> Settings:
    plain: dict[str, Any] = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in values.items()}
    return Settings.from_mapping(plain)


def _with_real_passwords(values: dict[str, str]) -> dict[str, str]:
    """The example's settings, with the placeholder passwords replaced as the admin must."""
    real = {name: A_REAL_PASSWORD for name in SERVICE_PASSWORDS} | {SESSION_SECRET: A_REAL_SESSION_SECRET}
    for name in real:
        if name in values:
            with pytest.raises(ConfigError, match=f"{name}: is (a placeholder|too short)"):
                _settings({name: values[name]})
    return {**values, **{name: value for name, value in real.items() if name in values}}


def test_the_env_file_example_is_a_valid_configuration_once_the_password_is_set() -> None:
    values = _env_file_settings(DEPLOY / "systemd" / "st-provider.env")
    assert len(values) > 15
    settings = _settings(_with_real_passwords(values))
    assert settings.auth == "ldap" and settings.ldap is not None
    assert len(settings.ldap.urls) == 2


def test_the_kubernetes_settings_are_valid_once_the_password_is_set() -> None:
    values = {
        **_kubernetes_settings(DEPLOY / "kubernetes" / "configmap.yaml"),
        **_kubernetes_settings(DEPLOY / "kubernetes" / "secret.example.yaml"),
    }
    assert f"{ENV_PREFIX}WEB_SERVICE_PASSWORD" in values and f"{ENV_PREFIX}DATABASE_URL" in values
    settings = _settings(_with_real_passwords(values))
    assert settings.database_url.startswith("postgresql://"), "pods share no disk: PostgreSQL only"
    assert settings.max_body_bytes == 1024 * 1024


# --- the Containerfile ---------------------------------------------------------------------


def test_the_containerfile_builds_a_non_root_image_without_secrets() -> None:
    instructions = _containerfile_instructions()
    bases = [arg.split()[0] for name, arg in instructions if name == "FROM"]
    assert bases == ["python:3.11-slim", "python:3.11-slim"]
    assert any(name == "RUN" and "pip install ." in arg for name, arg in instructions)
    (user,) = [arg for name, arg in instructions if name == "USER"]
    uid = int(user.split(":")[0])
    assert uid > 0
    job = yaml.safe_load((DEPLOY / "kubernetes" / "migrate-job.yaml").read_text())
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    (entrypoint,) = [json.loads(arg) for name, arg in instructions if name == "ENTRYPOINT"]
    assert entrypoint == ["st-provider"]
    for name, arg in instructions:
        if name in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", arg, re.IGNORECASE), arg


def _copy_sources() -> list[str]:
    sources = []
    for name, arg in _containerfile_instructions():
        if name == "COPY" and not arg.startswith("--from"):
            sources.extend(arg.split()[:-1])
    return sources


def test_everything_the_containerfile_copies_exists_and_is_in_the_build_context() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (DEPLOY / "Containerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for source in _copy_sources():
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert source.rstrip("/") in allowed, f"COPY {source}: excluded by Containerfile.dockerignore"


@pytest.mark.e2e
def test_the_installed_package_can_migrate_its_database(tmp_path: Path) -> None:
    """What the Containerfile does (pip install . of its COPY list), without the network:
    the installed package, not the source tree, must find its migrations."""
    source = tmp_path / "src"
    source.mkdir()
    for item in _copy_sources():
        if item.startswith("deploy/"):
            continue
        path = REPO / item
        if path.is_dir():
            shutil.copytree(path, source / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / item)
    target = tmp_path / "site"
    # As `pip install .` in the image: a regular (not editable) install, build isolation on.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        PYTHONPATH=str(target),
        ST_PROVIDER_WEB_SERVICE_PASSWORD="image-test-password",
        ST_PROVIDER_DATABASE_URL=f"sqlite:///{tmp_path / 'image.db'}",
    )
    script = (
        "import provider, sys\n"
        f"assert provider.__file__.startswith({str(target)!r}), provider.__file__\n"
        "from provider.cli import main\n"
        "sys.exit(main(['db', 'upgrade']))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "database at head" in run.stdout


# --- placeholder passwords ------------------------------------------------------------------

PASSWORD_ASSIGNMENT = re.compile(
    r"(?:ST_PROVIDER_)?(?:PREVIOUS_)?WEB_SERVICE_PASSWORD[ \t]*[=:][ \t]*(\"[^\"\n]*\"|'[^'\n]*'|[^\s\"']+)",
    re.IGNORECASE,
)


def _example_passwords() -> list[tuple[str, str]]:
    """Every Web Service Password value written in deploy/ and the READMEs (commented or not)."""
    found = []
    for path in [REPO / "README.md", *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]:
        for match in PASSWORD_ASSIGNMENT.finditer(path.read_text(errors="replace")):
            value = match.group(1).strip("\"'")
            if value and not value.startswith(("$", "`")):
                found.append((f"{path.relative_to(REPO)}", value))
    return found


def test_every_example_password_in_deploy_and_the_readme_is_refused_at_start() -> None:
    found = _example_passwords()
    values = {value for _, value in found}
    assert {"change-me-to-a-long-random-value", "CHANGE-ME", "..."} <= values, found
    for _where, value in found:
        for name in ("web_service_password", "previous_web_service_password"):
            with pytest.raises(ConfigError, match=f"{name.upper()}: is (a placeholder|too short)"):
                Settings.from_mapping({name: value})


def test_serve_refuses_the_shipped_placeholder_with_a_clear_message(tmp_path: Path) -> None:
    env = base_env(
        f"sqlite:///{tmp_path / 'never.db'}",
        ST_PROVIDER_WEB_SERVICE_PASSWORD="change-me-to-a-long-random-value",
    )
    result = run_cli(["serve", "--bind", "127.0.0.1:1"], env)
    assert result.returncode == 2
    assert "ST_PROVIDER_WEB_SERVICE_PASSWORD: is a placeholder from the examples" in result.stderr
    assert "change-me-to-a-long-random-value" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "never.db").exists()
