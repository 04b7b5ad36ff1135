"""KServe v2 Open Inference Protocol servicer (`inference.GRPCInferenceService`).

Wire compatible with Triton's extensions that tritonclient uses: repository index, load,
unload and model statistics. Tensors come in and go out as raw little-endian bytes.
"""

from __future__ import annotations

import sys

import numpy as np

import vision
from protos.inference import grpc_service_pb2 as pb
from protos.inference import grpc_service_pb2_grpc as pb_grpc
from serving.dataplane import DataPlane
from serving.repository import READY
from serving.rpc.vision_servicer import deadline_of
from serving.statistics import Duration, VersionStatistics
from vision.errors import InvalidInputError, ModelNotFoundError, VisionError

SERVER_NAME = "vision-serving"
EXTENSIONS = ["model_repository", "statistics", "binary_tensor_data"]

DATATYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_NUMPY_TO_DATATYPE = {np.dtype(v).name: k for k, v in DATATYPES.items()}
_CONTENT_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def datatype_of(dtype: str) -> str:
    """KServe datatype name of a numpy dtype name."""
    return _NUMPY_TO_DATATYPE.get(np.dtype(dtype).name, "BYTES")


def _decode_input(tensor: pb.InferInputTensor, raw: bytes | None) -> np.ndarray:
    if tensor.datatype not in DATATYPES:
        raise InvalidInputError(
            f"input {tensor.name!r}: datatype {tensor.datatype!r} not supported; "
            f"use one of {sorted(DATATYPES)}"
        )
    dtype = np.dtype(DATATYPES[tensor.datatype]).newbyteorder("<")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"input {tensor.name!r}: negative dimension in shape {shape}")
    count = int(np.prod(shape)) if shape else 1
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise InvalidInputError(
                f"input {tensor.name!r}: {len(raw)} bytes given; shape {list(shape)} of "
                f"{tensor.datatype} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)  # zero-copy view
    field = _CONTENT_FIELDS.get(tensor.datatype)
    values = getattr(tensor.contents, field) if field else []
    if len(values) != count:
        raise InvalidInputError(
            f"input {tensor.name!r}: {len(values)} values given; shape {list(shape)} needs {count}"
        )
    return np.asarray(values, dtype=dtype).reshape(shape)


def _little_endian_bytes(array: np.ndarray) -> bytes:
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's tensors, from raw_input_contents or typed contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; give one per input"
        )
    return {
        tensor.name: _decode_input(tensor, raw[i] if raw else None)
        for i, tensor in enumerate(request.inputs)
    }


def _duration(value: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=value.count, ns=value.ns)


def _statistics(name: str, version: str, stats: VersionStatistics) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=name,
        version=version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_infer=_duration(stats.compute_infer),
        ),
        batch_stats=[
            pb.InferBatchStatistics(batch_size=size, compute_infer=_duration(d))
            for size, d in sorted(stats.batches.items())
        ],
    )


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Health, metadata, inference, repository and statistics endpoints of KServe v2."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane
        self._repo = plane.repository

    async def ServerLive(self, request, context):  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        entries = self._repo.entries()
        return pb.ServerReadyResponse(
            ready=bool(entries) and all(e.state == READY for e in entries)
        )

    async def ModelReady(self, request, context):  # noqa: N802
        try:
            self._repo.get(request.name, request.version)
        except VisionError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):  # noqa: N802
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=vision.__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request, context):  # noqa: N802
        model = self._repo.get(request.name, request.version)
        entry = self._repo.entry(request.name)

        def tensors(specs):
            return [
                pb.ModelMetadataResponse.TensorMetadata(
                    name=s.name, datatype=datatype_of(s.dtype), shape=list(s.shape)
                )
                for s in specs
            ]

        return pb.ModelMetadataResponse(
            name=model.name,
            versions=sorted(entry.versions, key=int),
            platform="onnxruntime_onnx",
            inputs=tensors(model.session.inputs),
            outputs=tensors(model.session.outputs),
        )

    async def ModelInfer(self, request, context):  # noqa: N802
        feeds = decode_inputs(request)
        model, outputs = await self._plane.infer(
            request.model_name, request.model_version, feeds, deadline_of(context)
        )
        wanted = [o.name for o in request.outputs] or list(outputs)
        unknown = [name for name in wanted if name not in outputs]
        if unknown:
            raise InvalidInputError(f"unknown output(s) {unknown}; the model has {list(outputs)}")
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=request.id
        )
        for name in wanted:
            array = np.ascontiguousarray(outputs[name])
            response.outputs.add(
                name=name, datatype=datatype_of(str(array.dtype)), shape=list(array.shape)
            )
            response.raw_output_contents.append(
                array.astype(array.dtype.newbyteorder("<")).tobytes()
            )
        return response

    async def RepositoryIndex(self, request, context):  # noqa: N802
        loaded = {e.name: e for e in self._repo.entries()}
        index = []
        for name in sorted(set(self._repo.names_on_disk()) | set(loaded)):
            entry = loaded.get(name)
            state = entry.state if entry else "UNAVAILABLE"
            if request.ready and state != READY:
                continue
            versions = sorted(entry.versions, key=int) if entry and entry.versions else [""]
            reason = entry.reason if entry else "not loaded"
            index += [
                pb.RepositoryIndexResponse.ModelIndex(
                    name=name, version=v, state=state, reason=reason
                )
                for v in versions
            ]
        return pb.RepositoryIndexResponse(models=index)

    async def RepositoryModelLoad(self, request, context):  # noqa: N802
        if request.model_name not in self._repo.names_on_disk():
            raise ModelNotFoundError(
                f"no folder with config.yaml for {request.model_name!r} in the repository"
            )
        await self._repo.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):  # noqa: N802
        await self._repo.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelStatistics(self, request, context):  # noqa: N802
        if request.name:
            self._repo.entry(request.name)
        stats = [
            _statistics(name, version, value)
            for (name, version), value in sorted(self._plane.stats.snapshot().items())
            if (not request.name or name == request.name)
            and (not request.version or version == request.version)
        ]
        return pb.ModelStatisticsResponse(model_stats=stats)
