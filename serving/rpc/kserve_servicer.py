"""KServe v2 Open Inference Protocol servicer (`inference.GRPCInferenceService`).

Wire compatible with Triton's extensions that tritonclient uses: repository index, load,
unload and model statistics. Tensors come in and go out as raw little-endian bytes.
"""

from __future__ import annotations

from protos.inference import grpc_service_pb2 as pb
from protos.inference import grpc_service_pb2_grpc as pb_grpc
from serving.dataplane import DataPlane
from serving.model_info import TensorMetadata
from serving.rpc.vision_servicer import deadline_of
from serving.statistics import Duration, VersionStatistics
from serving.tensors import (
    datatype_of,
    tensor_from_bytes,
    tensor_from_values,
    to_little_endian_bytes,
)
from vision.errors import InvalidInputError

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


def _decode_input(tensor: pb.InferInputTensor, raw: bytes | None):
    if raw is not None:
        return tensor_from_bytes(tensor.name, tensor.datatype, tensor.shape, raw)
    field = _CONTENT_FIELDS.get(tensor.datatype)
    values = getattr(tensor.contents, field) if field else []
    return tensor_from_values(tensor.name, tensor.datatype, tensor.shape, values)


def decode_inputs(request: pb.ModelInferRequest) -> dict:
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


def _tensor_messages(specs: tuple[TensorMetadata, ...]) -> list:
    return [
        pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatype, shape=s.shape)
        for s in specs
    ]


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Health, metadata, inference, repository and statistics endpoints of KServe v2."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    async def ServerLive(self, request, context):  # noqa: N802
        """Liveness: the process answers."""
        return pb.ServerLiveResponse(live=self._plane.server_live())

    async def ServerReady(self, request, context):  # noqa: N802
        """Readiness: every model READY."""
        return pb.ServerReadyResponse(ready=self._plane.server_ready())

    async def ModelReady(self, request, context):  # noqa: N802
        """Whether one model (version) can serve now."""
        return pb.ModelReadyResponse(ready=self._plane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context):  # noqa: N802
        """Server name, version and extensions."""
        meta = self._plane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=list(meta.extensions)
        )

    async def ModelMetadata(self, request, context):  # noqa: N802
        """Versions, platform, inputs and outputs of a model."""
        meta = self._plane.model_metadata(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=list(meta.versions),
            platform=meta.platform,
            inputs=_tensor_messages(meta.inputs),
            outputs=_tensor_messages(meta.outputs),
        )

    async def ModelInfer(self, request, context):  # noqa: N802
        """Raw tensors through the model's batcher."""
        feeds = decode_inputs(request)
        result = await self._plane.infer(
            request.model_name, request.model_version, feeds, deadline_of(context)
        )
        outputs = result.outputs
        wanted = [o.name for o in request.outputs] or list(outputs)
        unknown = [name for name in wanted if name not in outputs]
        if unknown:
            raise InvalidInputError(f"unknown output(s) {unknown}; the model has {list(outputs)}")
        response = pb.ModelInferResponse(
            model_name=result.model, model_version=result.version, id=request.id
        )
        for name in wanted:
            array = outputs[name]
            response.outputs.add(
                name=name, datatype=datatype_of(str(array.dtype)), shape=list(array.shape)
            )
            response.raw_output_contents.append(to_little_endian_bytes(array))
        return response

    async def RepositoryIndex(self, request, context):  # noqa: N802
        """Models on disk or loaded, a row per version."""
        rows = self._plane.repository_index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=r.name, version=r.version, state=r.state, reason=r.reason
                )
                for r in rows
            ]
        )

    async def RepositoryModelLoad(self, request, context):  # noqa: N802
        """(Re)load a model folder."""
        await self._plane.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):  # noqa: N802
        """Stop serving a model; queued requests finish."""
        await self._plane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelStatistics(self, request, context):  # noqa: N802
        """Inference statistics per model version."""
        stats = self._plane.model_statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(
            model_stats=[_statistics(n, v, value) for (n, v), value in stats.items()]
        )
