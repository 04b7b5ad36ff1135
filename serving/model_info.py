"""What the server says about itself and its models, in domain terms (no wire format).

Built by the data plane from the repository; the vision.v1 and KServe servicers and the HTTP
routes only translate these into their messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import vision

# Model states, re-exported for transports, which never import the repository itself.
from serving.repository import LOADING as LOADING
from serving.repository import READY, ModelEntry, ModelVersion
from serving.repository import UNAVAILABLE as UNAVAILABLE
from serving.tensors import datatype_of
from vision.config import ModelConfig

SERVER_NAME = "vision-serving"
# KServe v2 extensions served on both gRPC and HTTP.
EXTENSIONS = ("model_repository", "statistics", "binary_tensor_data", "system_shared_memory")


@dataclass(frozen=True)
class ServerMetadata:
    """KServe server metadata."""

    name: str = SERVER_NAME
    version: str = vision.__version__
    extensions: tuple[str, ...] = EXTENSIONS


@dataclass(frozen=True)
class TensorMetadata:
    """One graph input or output: KServe datatype name ("FP32") and shape (-1: dynamic)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    """KServe model metadata of one served version."""

    name: str
    version: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(frozen=True)
class VersionStatus:
    """A version's state as the repository sees it ("" version: the model has none loaded)."""

    version: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class ModelStatus:
    """One model folder: task and versions with their states."""

    name: str
    task: str
    versions: tuple[VersionStatus, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class VisionModelInfo:
    """vision.v1 model metadata: the config, where it runs, whether it explains."""

    name: str
    version: str
    config: ModelConfig
    providers: tuple[str, ...]
    explainable: bool


def _sorted_versions(entry: ModelEntry) -> tuple[str, ...]:
    return tuple(sorted(entry.versions, key=int))


def _tensors(specs) -> tuple[TensorMetadata, ...]:
    return tuple(TensorMetadata(s.name, datatype_of(s.dtype), tuple(s.shape)) for s in specs)


def model_metadata(model: ModelVersion, entry: ModelEntry) -> ModelMetadata:
    """KServe metadata of `model`, a served version of `entry`."""
    return ModelMetadata(
        name=model.name,
        version=model.version,
        versions=_sorted_versions(entry),
        platform="onnxruntime_onnx",
        inputs=_tensors(model.session.inputs),
        outputs=_tensors(model.session.outputs),
    )


def model_status(entry: ModelEntry) -> ModelStatus:
    """The entry's versions and state: a row per served version, then one per version that
    failed its last load (UNAVAILABLE, with the reason) while others still serve; a model with
    none served has one row with version "" and the entry's state and reason."""
    served = tuple(VersionStatus(v, entry.state, entry.reason) for v in _sorted_versions(entry))
    task = entry.config.task if entry.config else ""
    if not served:
        return ModelStatus(entry.name, task, (VersionStatus("", entry.state, entry.reason),))
    failed = tuple(
        VersionStatus(
            v,
            UNAVAILABLE,
            f"failed to load: {reason}; still serving {', '.join(_sorted_versions(entry))}",
        )
        for v, reason in sorted(entry.failures.items(), key=lambda kv: int(kv[0] or -1))
        if v not in entry.versions
    )
    return ModelStatus(entry.name, task, served + failed)


def vision_model_info(model: ModelVersion) -> VisionModelInfo:
    """vision.v1 metadata of a served version."""
    return VisionModelInfo(
        name=model.name,
        version=model.version,
        config=model.config,
        providers=tuple(model.session.providers),
        explainable=model.explain_ready,
    )


def server_ready(entries: list[ModelEntry]) -> bool:
    """KServe readiness, "serving what it can": every model has finished its first load
    (READY, or failed with its reason) and at least one is READY. A broken model makes that
    model not ready (ModelReady), never the server."""
    return all(e.settled for e in entries) and any(e.state == READY for e in entries)


@dataclass(frozen=True)
class ModelIndexEntry:
    """One row of the KServe repository index."""

    name: str
    version: str
    state: str
    reason: str


def repository_index(
    on_disk: list[str], loaded: list[ModelEntry], ready_only: bool
) -> list[ModelIndexEntry]:
    """A row per served version of every model on disk or loaded; "not loaded" for the rest."""
    by_name = {e.name: e for e in loaded}
    rows = []
    for name in sorted(set(on_disk) | set(by_name)):
        entry = by_name.get(name)
        if entry is None:
            rows.append(ModelIndexEntry(name, "", "UNAVAILABLE", "not loaded"))
            continue
        rows += [
            ModelIndexEntry(name, v.version, v.state, v.reason)
            for v in model_status(entry).versions
        ]
    return [r for r in rows if not ready_only or r.state == READY]
