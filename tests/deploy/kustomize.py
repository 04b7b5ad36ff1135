"""A tiny kustomize renderer for the tests: the subset deploy/k8s uses, in Python.

Supported: `resources` (files, or folders with their own kustomization), `namespace`,
`patches` with a `path` to a strategic-merge patch (targets found by kind and name), and
`images` (`name` → `newName` / `newTag`). Strategic merge as Kubernetes does it for these
fields: maps merge, `null` deletes a key, lists of containers / env / volumes merge by `name`,
volumeMounts by `mountPath`, ports by `containerPort` (items a patch adds go first, as
kustomize puts them), other lists are replaced. Anything else in
a kustomization is refused, so the overlays cannot quietly use what this does not render. When
`kubectl` is installed the tests compare this output with `kubectl kustomize`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {"apiVersion", "kind", "resources", "namespace", "patches", "images"}
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"}


def load_documents(path: Path) -> list[dict]:
    """Every non-empty YAML document in `path`."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(folder: Path) -> list[dict]:
    """The resources the kustomization in `folder` builds."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN
    if unknown:
        raise ValueError(f"{folder}: the test renderer does not support {sorted(unknown)}")
    docs: list[dict] = []
    for entry in spec.get("resources", []):
        target = folder / entry
        docs += render(target) if target.is_dir() else load_documents(target)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{folder}: only `patches: - path: FILE` is supported")
        for body in load_documents(folder / patch["path"]):
            apply_patch(docs, body)
    for image in spec.get("images", []):
        set_image(docs, image)
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return docs


def apply_patch(docs: list[dict], patch: dict) -> None:
    """Strategic-merge `patch` into the one document with its kind and name."""
    name = patch["metadata"]["name"]
    matches = [d for d in docs if d["kind"] == patch["kind"] and d["metadata"]["name"] == name]
    if len(matches) != 1:
        raise ValueError(f"patch for {patch['kind']}/{name} matches {len(matches)} resources")
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    merged = merge(matches[0], body)
    matches[0].clear()
    matches[0].update(merged)


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """`patch` merged into a copy of `base` (strategic merge, as described above)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out, new = copy.deepcopy(base), []
        for item in patch:
            index = next((i for i, b in enumerate(out) if b.get(key) == item.get(key)), None)
            if index is None:
                new.append(copy.deepcopy(item))
            else:
                out[index] = merge(out[index], item)
        return new + out  # as kustomize orders them: items the patch adds come first
    return copy.deepcopy(patch)


def pod_spec(doc: dict) -> dict | None:
    """The pod template's spec of a workload, or None for other kinds."""
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def set_image(docs: list[dict], image: dict) -> None:
    """The `images:` transformer: containers whose image name is `image['name']`."""
    for doc in docs:
        spec = pod_spec(doc)
        for container in (spec or {}).get("containers", []) + (spec or {}).get(
            "initContainers", []
        ):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                new_name = image.get("newName", name)
                new_tag = image.get("newTag", tag)
                container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
