"""deploy/kubernetes/: the manifests parse, hang together (names, selectors, ports), every
container has probes, limits and a locked-down securityContext, and no secret is written
in them. ``kubectl kustomize`` builds the set where kubectl exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from provider.settings import Settings
from tests.integration.test_deploy_gunicorn import load_config
from tests.support import REPO

KUBE = REPO / "deploy" / "kubernetes"
SECRET_EXAMPLE = "secret.example.yaml"
PLACEHOLDER = "CHANGE-ME"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE|CREDENTIAL|DATABASE_URL", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:([^/@\s]+)@")
WORKLOADS = ("Deployment", "Job")


def _documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path.name, doc


@pytest.fixture(scope="module")
def docs() -> list[tuple[str, dict[str, Any]]]:
    return list(_documents())


def by_kind(docs: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in docs if doc["kind"] == kind]


def named(docs: list[tuple[str, dict[str, Any]]], kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in by_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def pod_specs(docs: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"])
        for _, doc in docs
        if doc["kind"] in WORKLOADS
    ]


def test_every_manifest_parses_and_is_listed(docs: list[tuple[str, dict[str, Any]]]) -> None:
    assert docs
    for filename, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), filename
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files - {SECRET_EXAMPLE}, "every manifest but the Secret example is applied"
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Deployment", "Job", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"} <= kinds


def test_workloads_run_the_provider_image_with_config_and_secrets_from_the_environment(
    docs: list[tuple[str, dict[str, Any]]],
) -> None:
    configmap = by_kind(docs, "ConfigMap")[0]["metadata"]["name"]
    secret = by_kind(docs, "Secret")[0]["metadata"]["name"]
    for where, spec in pod_specs(docs):
        assert spec.get("automountServiceAccountToken") is False, where
        for container in spec["containers"]:
            assert container["image"] == "st-provider", where
            sources = container["envFrom"]
            assert {"configMapRef": {"name": configmap}} in sources, where
            assert {"secretRef": {"name": secret}} in sources, where


def test_every_container_is_locked_down_and_limited(docs: list[tuple[str, dict[str, Any]]]) -> None:
    specs = pod_specs(docs)
    assert len(specs) == 3
    for where, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        mounts_needed = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        assert mounts_needed <= {v["name"] for v in spec.get("volumes", [])}, where
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            assert context.get("privileged", False) is False, where
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, f"{where}: {kind}"
            # A read-only root needs a writable /tmp (metrics files, temporary files).
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), where


def _probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return ports[port] if isinstance(port, str) else int(port)


def test_deployments_have_probes_on_ports_they_listen_on(docs: list[tuple[str, dict[str, Any]]]) -> None:
    for deployment in by_kind(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{deployment['metadata']['name']}: {probe}"
                assert _probe_port(container, container[probe]) in {
                    p["containerPort"] for p in container["ports"]
                }


def test_the_soap_deployment_probes_and_stops_gracefully(docs: list[tuple[str, dict[str, Any]]]) -> None:
    deployment = named(docs, "Deployment", "st-provider")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert _probe_port(container, container["readinessProbe"]) == 8080
    configmap = by_kind(docs, "ConfigMap")[0]["data"]
    assert configmap["ST_PROVIDER_BIND"].endswith(":8080")
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] > load_config().graceful_timeout + pause
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_selectors_match(docs: list[tuple[str, dict[str, Any]]]) -> None:
    deployments = by_kind(docs, "Deployment")
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()

    def matching(selector: dict[str, str]) -> list[str]:
        return [
            d["metadata"]["name"]
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]

    (service,) = by_kind(docs, "Service")
    assert matching(service["spec"]["selector"]) == ["st-provider"], "the Service must not pick worker pods"
    soap = named(docs, "Deployment", "st-provider")["spec"]["template"]["spec"]["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in soap["ports"]}
    budgets = {
        b["metadata"]["name"]: matching(b["spec"]["selector"]["matchLabels"])
        for b in by_kind(docs, "PodDisruptionBudget")
    }
    assert sorted(name for names in budgets.values() for name in names) == [
        "st-provider",
        "st-provider-worker",
    ]


def test_the_migration_job_runs_db_upgrade_once(docs: list[tuple[str, dict[str, Any]]]) -> None:
    (job,) = by_kind(docs, "Job")
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert 0 < spec["backoffLimit"] <= 5 and spec["activeDeadlineSeconds"] > 0
    assert spec["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]


def test_the_ingress_routes_only_the_soap_endpoint_and_the_sign_in_code_page(
    docs: list[tuple[str, dict[str, Any]]],
) -> None:
    (ingress,) = by_kind(docs, "Ingress")
    assert ingress["spec"]["tls"]
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    # Anchored, case-insensitive regular expressions (see test_deploy_agreement.py).
    assert {(p["path"], p["pathType"]) for p in paths} == {
        (r"/ExternalProvider\.asmx$", "ImplementationSpecific"),
        ("/$", "ImplementationSpecific"),
        ("/signin-code$", "ImplementationSpecific"),
    }
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/use-regex"] == "true"
    body = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert body == "1m" and Settings().max_body_bytes == 1024 * 1024


def test_no_secret_is_written_in_the_manifests(docs: list[tuple[str, dict[str, Any]]]) -> None:
    for filename, doc in docs:
        if doc["kind"] == "Secret":
            assert filename == SECRET_EXAMPLE
            assert "data" not in doc, "base64 data hides what is in it: use stringData placeholders"
            for key, value in doc["stringData"].items():
                assert PLACEHOLDER in value, f"{key} is not a placeholder"
                password = URL_WITH_PASSWORD.search(value)
                assert password is None or password.group(1) == PLACEHOLDER, key
            continue
        if doc["kind"] == "ConfigMap":
            for key, value in doc["data"].items():
                assert not SECRET_NAME.search(key), f"{key} belongs in the Secret"
                assert not URL_WITH_PASSWORD.search(value), f"{key} carries a password"
        for container in _containers(doc):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env, f"{filename}: {env['name']} must come from a secretKeyRef"
    # Commented-out examples must not hold real values either.
    for path in KUBE.glob("*.yaml"):
        for line in path.read_text().splitlines():
            match = re.match(r"\s*#\s*([A-Z0-9_]+):\s*\"?([^\"]*)\"?\s*$", line)
            if match and SECRET_NAME.search(match.group(1)):
                assert PLACEHOLDER in match.group(2), f"{path.name}: {line.strip()}"


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] not in WORKLOADS:
        return []
    spec = doc["spec"]["template"]["spec"]
    return list(spec["containers"]) + list(spec.get("initContainers", []))


KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (the structure is checked above)")
def test_kubectl_kustomize_builds_the_set(docs: list[tuple[str, dict[str, Any]]]) -> None:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(built) == len(docs) - 1  # all but the Secret example
    namespaces = {d["metadata"].get("namespace") for d in built if d["kind"] != "Namespace"}
    assert namespaces == {"st-provider"}
    images = {c["image"] for d in built for c in _containers(d)}
    assert len(images) == 1 and images.pop().startswith("registry.example.com/st-provider:")
