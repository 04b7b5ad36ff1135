"""deploy/k8s rendered (kustomize in Python, checked against `kubectl kustomize` when installed)
and validated offline against the Kubernetes schemas of a pinned version (kubernetes-validate,
strict: unknown fields refused); then what the schemas cannot see: probes on the right port and
protocol, the server's own flag parser accepting the args, mounts behind every path, selectors
that select, the DICOM node's settings loaded by its own loader."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.commands.serve import build_parser
from tests.deploy.kustomize import pod_spec, render

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate.utils", reason="kubernetes-validate is not installed (dev extra)"
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.32.0"  # the oldest release the manifests are checked against; grpc probes GA 1.27
BUILDS = ["base", "overlays/production", "overlays/gpu", "monitoring"]
WORKLOADS = {"Deployment": "vision-server", "StatefulSet": "vision-dicom-node"}


def _by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.fixture(scope="module", params=BUILDS)
def build(request) -> tuple[str, list[dict]]:
    return request.param, render(K8S / request.param)


def test_every_resource_is_valid_for_the_pinned_kubernetes(build):
    name, docs = build
    assert docs, f"{name} renders nothing"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_validation_can_fail():
    deployment = _by_kind(render(K8S / "base"))[("Deployment", "vision-server")]
    container = pod_spec(deployment)["containers"][0]
    container["readinessProbe"]["grpc"]["port"] = "grpc"  # grpc probes take a number only
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    container["readinessProbe"]["grpc"] = {"port": 8001, "servce": ""}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


@pytest.mark.parametrize("folder", BUILDS)
def test_python_renderer_matches_kubectl_kustomize(folder):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Python renderer alone is used")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    theirs = _by_kind([d for d in yaml.safe_load_all(done.stdout) if d])
    assert theirs == _by_kind(render(K8S / folder))


def _container(doc: dict) -> dict:
    (container,) = pod_spec(doc)["containers"]
    return container


def _serve_args(container: dict):
    args = container["args"]
    assert container["command"] == ["vision"]
    rest = args[1:] if args[0] == "serve" else args[2:]
    assert args[0] == "serve" or args[:2] == ["dicom-node", "run"]
    return build_parser().parse_args(rest)  # the server's own parser: a bad flag fails here


def _mounted(doc: dict, path: Path) -> dict:
    """The volume behind `path` in the workload (AssertionError when nothing is mounted)."""
    spec, container = pod_spec(doc), _container(doc)
    mounts = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is not under any volumeMount of {doc['metadata']['name']}"
    name = max(mounts, key=lambda m: len(m["mountPath"]))["name"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {t["metadata"]["name"]: t for t in doc["spec"].get("volumeClaimTemplates", [])}
    assert name in volumes or name in claims, f"volume {name} is not defined"
    return volumes.get(name) or {"claimTemplate": claims[name]}


@pytest.mark.parametrize("folder", ["base", "overlays/production", "overlays/gpu"])
@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_args_parse_and_every_path_is_mounted(folder, kind):
    doc = _by_kind(render(K8S / folder))[(kind, WORKLOADS[kind])]
    args = _serve_args(_container(doc))
    assert args.host == "0.0.0.0" and args.grpc_port == 8001 and args.http_port == 8000
    models = _mounted(doc, Path(args.models))
    assert models["persistentVolumeClaim"] == {"claimName": "vision-models", "readOnly": True}
    assert "secret" in _mounted(doc, Path(args.auth_tokens))
    for path in (args.tls_cert, args.tls_key, args.tls_client_ca):
        if path is not None:
            assert "secret" in _mounted(doc, Path(path))
    ports = {p["name"]: p["containerPort"] for p in _container(doc)["ports"]}
    assert (ports["grpc"], ports["http"]) == (args.grpc_port, args.http_port)


@pytest.mark.parametrize("folder", ["base", "overlays/production", "overlays/gpu"])
@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_probes_fit_the_transport(folder, kind):
    doc = _by_kind(render(K8S / folder))[(kind, WORKLOADS[kind])]
    container = _container(doc)
    tls = _serve_args(container).tls_cert is not None
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = container[probe]
        if not tls:  # kubelet's grpc probe speaks plaintext: only without TLS
            assert spec["grpc"] == {"port": 8001} and "exec" not in spec
            continue
        assert "grpc" not in spec, f"{probe}: a grpc probe cannot pass a TLS port"
        assert spec["exec"]["command"] == ["python", "-m", "serving.health_probe"]
    if tls:  # the probe's certificate files are mounted; mTLS needs the client pair
        for key in ("VISION_PROBE_TLS_CA", "VISION_PROBE_TLS_CERT", "VISION_PROBE_TLS_KEY"):
            assert "secret" in _mounted(doc, Path(env[key]))


def test_statefulset_keeps_spool_and_outbox_on_its_claim():
    docs = _by_kind(render(K8S / "base"))
    node = docs[("StatefulSet", "vision-dicom-node")]
    args = _serve_args(_container(node))
    state = _mounted(node, Path(args.dicom_state_dir))
    assert state["claimTemplate"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert node["spec"]["replicas"] == 1
    assert node["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    headless = docs[("Service", node["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"


def test_dicom_node_settings_load_with_the_nodes_loader(tmp_path):
    pytest.importorskip("pynetdicom", reason="the dicom extra is not installed")
    from dicom_node.settings import load_node_settings

    docs = _by_kind(render(K8S / "base"))
    config = docs[("ConfigMap", "vision-dicom-node")]
    path = tmp_path / "node.yaml"
    path.write_text(config["data"]["node.yaml"])
    settings = load_node_settings(path)
    container = _container(docs[("StatefulSet", "vision-dicom-node")])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.port == ports["dicom"] and settings.destinations
    assert "secret" not in config["data"]["node.yaml"].lower()


@pytest.mark.parametrize("folder", ["base", "overlays/production"])
def test_selectors_select_and_target_ports_exist(folder):
    docs = render(K8S / folder)
    pods = {
        d["metadata"]["name"]: (d["spec"]["template"]["metadata"]["labels"], _container(d))
        for d in docs
        if d["kind"] in WORKLOADS
    }

    def selected(selector: dict) -> list[str]:
        return [n for n, (labels, _) in pods.items() if selector.items() <= labels.items()]

    for doc in docs:
        if doc["kind"] == "Service":
            (name,) = selected(doc["spec"]["selector"])
            names = {p["name"] for p in pods[name][1]["ports"]}
            assert {p["targetPort"] for p in doc["spec"]["ports"]} <= names
        elif doc["kind"] in ("NetworkPolicy", "PodDisruptionBudget"):
            key = "podSelector" if doc["kind"] == "NetworkPolicy" else "selector"
            assert len(selected(doc["spec"][key]["matchLabels"])) == 1, doc["metadata"]["name"]


def test_hpa_scales_the_deployment_on_the_adapters_metric():
    docs = _by_kind(render(K8S / "base"))
    hpa = docs[("HorizontalPodAutoscaler", "vision-server")]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) in docs
    pods_metric = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    rules = yaml.safe_load(
        _by_kind(render(K8S / "monitoring"))[("ConfigMap", "vision-prometheus-adapter-rules")][
            "data"
        ]["config.yaml"]
    )["rules"]
    names = {rule["name"]["as"] for rule in rules}
    assert pods_metric["pods"]["metric"]["name"] in names
    assert hpa["spec"]["minReplicas"] >= 2  # one pod may drain while another serves


@pytest.mark.parametrize("folder", ["base", "overlays/production"])
@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_grace_period_outlasts_the_drain(folder, kind):
    """SIGKILL must not come before the drain ends, or admitted requests are lost."""
    doc = _by_kind(render(K8S / folder))[(kind, WORKLOADS[kind])]
    drain = _serve_args(_container(doc)).drain_timeout
    assert pod_spec(doc)["terminationGracePeriodSeconds"] >= drain + 10
