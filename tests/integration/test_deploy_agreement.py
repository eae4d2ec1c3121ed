"""The deployment examples agree with each other and with the service.

* Kubernetes' liveness probe asks a path that stays 200 through a database outage, its
  readiness probe one that does not (else an outage restarts every pod);
* the Ingress, deploy/nginx and the service route the same paths, ignoring case alike;
* the channel secrets named in rules/ examples are the ones deploy/ examples define;
* the Prometheus example scrapes addresses the shipped files make something listen on.

Everything is read from the files as shipped.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provider.app import build_application
from provider.settings import Settings
from tests.fixtures.server import wsgi_call
from tests.support import REPO, WEB_SERVICE_PASSWORD

DEPLOY = REPO / "deploy"
KUBE = DEPLOY / "kubernetes"
NGINX_CONF = DEPLOY / "nginx" / "st-provider.conf"
ENV_FILE = DEPLOY / "systemd" / "st-provider.env"
WORKER_UNIT = DEPLOY / "systemd" / "st-provider-worker@.service"
# Not channel secrets: gunicorn's own variables, set in the same files.
NOT_CHANNEL_SECRETS = re.compile(r"^(ST_PROVIDER_|FORWARDED_ALLOW_IPS$|GUNICORN_|PROMETHEUS_)")


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kube(kind: str, name: str) -> dict[str, Any]:
    found = [
        doc
        for path in sorted(KUBE.glob("*.yaml"))
        for doc in _yaml_documents(path)
        if doc.get("kind") == kind and doc["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def _env_file() -> dict[str, str]:
    """NAME=value lines of the env file, commented-out examples included."""
    values = {}
    for line in ENV_FILE.read_text().splitlines():
        match = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


# --- liveness and readiness -------------------------------------------------------------------


@pytest.fixture
def app_without_database(tmp_path: Path) -> Iterator[Callable[[str], int]]:
    """The real application whose database cannot be reached; GET path -> status."""
    settings = Settings.from_mapping(
        {
            "web_service_password": WEB_SERVICE_PASSWORD,
            "database_url": f"sqlite:///{tmp_path / 'gone' / 'provider.db'}",
            "auth": "none",
        }
    )
    app = build_application(settings)
    try:
        yield lambda path: wsgi_call(app, "GET", path).status
    finally:
        assert app.database is not None
        app.database.dispose()


def test_a_database_outage_fails_readiness_but_never_liveness(
    app_without_database: Callable[[str], int],
) -> None:
    (container,) = _kube("Deployment", "st-provider")["spec"]["template"]["spec"]["containers"]
    for probe in ("livenessProbe", "startupProbe"):
        assert app_without_database(container[probe]["httpGet"]["path"]) == 200, probe
    assert app_without_database(container["readinessProbe"]["httpGet"]["path"]) == 503


# --- which paths reach the service ------------------------------------------------------------

SAMPLE_PATHS = [
    "/ExternalProvider.asmx",
    "/externalprovider.asmx",
    "/EXTERNALPROVIDER.ASMX",
    "/",
    "/ExternalProvider.asmx/extra",
    "/x/ExternalProvider.asmx",
    "/ExternalProviderXasmx",
    "/ExternalProvider.asmx.bak",
    "/metrics",
    "/healthz",
    "/readyz",
    "/admin",
]


@dataclass
class Location:
    modifier: str
    pattern: str
    body: str

    def matches(self, path: str) -> bool:
        if self.modifier == "=":
            return path == self.pattern
        if self.modifier in ("~", "~*"):
            return re.search(self.pattern, path, re.IGNORECASE if self.modifier == "~*" else 0) is not None
        return path.startswith(self.pattern)


def _nginx_locations() -> list[Location]:
    text = NGINX_CONF.read_text()
    found = []
    for match in re.finditer(r"^\s*location\s+(?:(=|~\*|~)\s+)?(\S+)\s*\{", text, re.MULTILINE):
        depth, index = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        found.append(Location(match.group(1) or "", match.group(2), text[match.end() : index]))
    return found


def _nginx_location(path: str) -> Location:
    """nginx's choice: an exact match, else the first matching regex, else the longest prefix."""
    locations = _nginx_locations()
    for location in locations:
        if location.modifier == "=" and location.matches(path):
            return location
    for location in locations:
        if location.modifier.startswith("~") and location.matches(path):
            return location
    prefixes = [loc for loc in locations if loc.modifier == "" and loc.matches(path)]
    return max(prefixes, key=lambda loc: len(loc.pattern))


def _nginx_serves_soap(path: str) -> bool:
    location = _nginx_location(path)
    return "proxy_pass" in location.body and "$st_provider_caller" in location.body


def _plain_path_matches(path_type: str, pattern: str, path: str) -> bool:
    """Kubernetes' own (case-sensitive) Exact and Prefix matching."""
    if path_type == "Exact":
        return path == pattern
    return path_type == "Prefix" and (path + "/").startswith(pattern.rstrip("/") + "/")


def _ingress_routes(path: str) -> bool:
    ingress = _kube("Ingress", "st-provider")
    annotations = ingress["metadata"].get("annotations", {})
    regex = annotations.get("nginx.ingress.kubernetes.io/use-regex") == "true"
    for rule in ingress["spec"]["rules"]:
        for item in rule["http"]["paths"]:
            if regex:
                # ingress-nginx: location ~* "^<path>" (case-insensitive, anchored at the start).
                assert item["pathType"] == "ImplementationSpecific"
                if re.match(item["path"], path, re.IGNORECASE):
                    return True
            elif _plain_path_matches(item["pathType"], item["path"], path):
                return True
    return False


def _service_answers_soap(path: str) -> bool:
    from provider.app import _SOAP_PATHS

    return path.lower() in _SOAP_PATHS


@pytest.mark.parametrize("path", SAMPLE_PATHS)
def test_the_ingress_nginx_and_the_service_route_the_same_soap_paths(path: str) -> None:
    service = _service_answers_soap(path)
    assert _nginx_serves_soap(path) == service, f"deploy/nginx disagrees on {path}"
    assert _ingress_routes(path) == service, f"the Ingress disagrees on {path}"


def test_the_sample_covers_every_case() -> None:
    assert {_service_answers_soap(p) for p in SAMPLE_PATHS} == {True, False}
    assert _service_answers_soap("/externalprovider.asmx"), "the service ignores case"


# --- channel secrets --------------------------------------------------------------------------


def _rules_secret_names() -> set[str]:
    """``${VAR}`` references in the rules examples' YAML (the files, the README's yaml blocks)."""
    texts = [path.read_text() for path in sorted((REPO / "rules").glob("*.yaml"))]
    texts += re.findall(r"```yaml\n(.*?)```", (REPO / "rules" / "README.md").read_text(), re.DOTALL)
    names: set[str] = set()
    for text in texts:
        for line in text.splitlines():
            code = re.sub(r"(^|\s)#.*$", "", line)  # comments explain ${VAR} in prose
            names.update(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", code))
    return names


def _secret_example_names() -> set[str]:
    path = KUBE / "secret.example.yaml"
    (secret,) = _yaml_documents(path)
    names = set(secret["stringData"])
    names.update(re.findall(r"^\s*#\s*([A-Z][A-Z0-9_]*):", path.read_text(), re.MULTILINE))
    return {name for name in names if not NOT_CHANNEL_SECRETS.match(name)}


def test_the_channel_secrets_of_the_rules_examples_are_the_ones_deploy_defines() -> None:
    rules = _rules_secret_names()
    assert rules, "the rules examples name their secrets as ${VAR}"
    env_file = {name for name in _env_file() if not NOT_CHANNEL_SECRETS.match(name)}
    assert env_file == rules, "deploy/systemd/st-provider.env"
    assert _secret_example_names() == rules, "deploy/kubernetes/secret.example.yaml"


# --- metrics ----------------------------------------------------------------------------------


def _scrape_configs() -> list[dict[str, Any]]:
    text = (DEPLOY / "README.md").read_text()
    match = re.search(r"```yaml\n(\s*scrape_configs:.*?)```", text, re.DOTALL)
    assert match, "deploy/README.md has a Prometheus example"
    return list(yaml.safe_load(textwrap.dedent(match.group(1)))["scrape_configs"])


def _nginx_https_names() -> tuple[set[str], set[int]]:
    text = NGINX_CONF.read_text()
    names = set(re.findall(r"^\s*server_name\s+([^;]+);", text, re.MULTILINE)[0].split())
    ports = {int(p) for p in re.findall(r"^\s*listen\s+(\d+)\s+ssl", text, re.MULTILINE)}
    return names, ports


def _listening_addresses() -> set[str]:
    """What the shipped systemd files listen on: the service's bind and each worker instance."""
    addresses = {_env_file()["ST_PROVIDER_BIND"]}
    exec_start = next(line for line in WORKER_UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    bind = re.search(r"--metrics-bind\s+(\S+)", exec_start)
    assert bind and "%i" in bind.group(1)
    instances = set(re.findall(r"st-provider-worker@(\d+)", (DEPLOY / "README.md").read_text()))
    addresses.update(bind.group(1).replace("%i", instance) for instance in instances)
    return addresses


def test_the_prometheus_example_scrapes_addresses_the_shipped_files_listen_on() -> None:
    listening = _listening_addresses()
    https_names, https_ports = _nginx_https_names()
    metrics = _nginx_location("/metrics")
    assert "proxy_pass" in metrics.body and "$st_provider_monitor" in metrics.body
    jobs = _scrape_configs()
    assert len(jobs) >= 2
    for job in jobs:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for target in (t for group in job["static_configs"] for t in group["targets"]):
            if job.get("scheme", "http") == "https":
                host, _, port = target.rpartition(":")
                assert host in https_names and int(port) in https_ports, f"{job['job_name']}: {target}"
            else:
                assert target in listening, f"{job['job_name']}: nothing listens on {target}"


def test_the_pods_prometheus_annotations_name_the_ports_they_listen_on() -> None:
    configmap = _kube("ConfigMap", "st-provider-config")["data"]
    expected = {
        "st-provider": configmap["ST_PROVIDER_BIND"].rpartition(":")[2],
    }
    worker = _kube("Deployment", "st-provider-worker")
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    expected["st-provider-worker"] = args[args.index("--metrics-bind") + 1].rpartition(":")[2]
    for name, port in expected.items():
        template = _kube("Deployment", name)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == port, name
        ports = {str(p["containerPort"]) for c in template["spec"]["containers"] for p in c["ports"]}
        assert port in ports, name
