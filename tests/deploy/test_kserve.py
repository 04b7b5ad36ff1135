"""deploy/kserve: the InferenceServices against KServe's own CRD schema (the vendored subset of
its openAPIV3Schema, tests/deploy/schemas/), with unknown keys refused; the custom predictor
speaks v2 on the ports KServe and Knative expect, with args the server's parser accepts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from app.commands.serve import build_parser

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (dev extra)")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).with_name("schemas") / "kserve-inferenceservice-v1beta1.yaml"
SERVICES = sorted((ROOT / "deploy" / "kserve").glob("*.yaml"))


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())["openAPIV3Schema"]


def unknown_keys(doc: object, schema: dict, path: str = "") -> list[str]:
    """Keys of `doc` the schema does not list (strict field validation)."""
    if isinstance(doc, dict) and "properties" in schema:
        found = []
        for key, value in doc.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_keys(value, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(doc, list) and "items" in schema:
        items = schema["items"]
        return [k for i, v in enumerate(doc) for k in unknown_keys(v, items, f"{path}[{i}]")]
    return []


def _load(path: Path) -> dict:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return doc


def test_there_are_inference_services():
    assert {p.name for p in SERVICES} >= {"inferenceservice.yaml"}


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_valid_against_the_crd_schema(path, schema):
    doc = _load(path)
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    jsonschema.validate(doc, schema)
    assert unknown_keys(doc, schema) == []


def test_schema_refuses_what_kserve_refuses(schema):
    doc = _load(ROOT / "deploy" / "kserve" / "inferenceservice.yaml")
    bad_port = copy.deepcopy(doc)
    bad_port["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8001"
    no_predictor = {**doc, "spec": {}}
    for bad in (bad_port, no_predictor):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    typo = copy.deepcopy(doc)
    typo["spec"]["predictor"]["containers"][0]["volumeMount"] = []
    assert unknown_keys(typo, schema) == [".spec.predictor.containers[0].volumeMount"]


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_v2_predictor_ports_and_args(path):
    doc = _load(path)
    (container,) = doc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["vision"] and container["args"][0] == "serve"
    args = build_parser().parse_args(container["args"][1:])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["h2c"] == args.grpc_port == 8001  # Knative and KServe route gRPC to "h2c"
    raw = doc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
    if raw == "RawDeployment":
        assert ports == {"h2c": 8001, "http": args.http_port} and args.http_port == 8000
    else:  # Serverless: Knative allows exactly one port
        assert ports == {"h2c": 8001}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in doc["spec"]["predictor"]["volumes"]}
    claim = volumes[mounts[str(args.models)]]["persistentVolumeClaim"]
    assert claim["claimName"] == "vision-models"
    assert "secret" in volumes[mounts[str(Path(args.auth_tokens).parent)]]
