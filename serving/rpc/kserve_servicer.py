"""KServe v2 Open Inference Protocol servicer (`inference.GRPCInferenceService`).

Wire compatible with Triton's extensions that tritonclient uses: repository index, load,
unload, model statistics and system shared memory. Tensors come in and go out as raw
little-endian bytes (through the lean codec of `serving/rpc/kserve_wire.py`) or by reference
to a registered shared-memory region (`serving/shared_memory.py`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np

from protos.inference import grpc_service_pb2 as pb
from protos.inference import grpc_service_pb2_grpc as pb_grpc
from serving.admission import Intake
from serving.dataplane import DataPlane
from serving.model_info import TensorMetadata
from serving.rpc.kserve_wire import InferCall, InferReply
from serving.rpc.vision_servicer import deadline_of
from serving.shared_memory import (
    BYTE_SIZE_PARAMETER,
    OFFSET_PARAMETER,
    REGION_PARAMETER,
    SharedMemoryRegistry,
    TensorRef,
    little_endian,
    write_to_region,
)
from serving.statistics import Duration, VersionStatistics
from serving.tensors import (
    datatype_of,
    tensor_from_bytes,
    tensor_from_values,
)
from vision.errors import DeadlineExceededError, InvalidInputError, VisionError

INFER_API = "infer"  # the api label of ModelInfer in the metrics (as the data plane's)

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


def _decode_input(tensor: pb.InferInputTensor, raw: object | None) -> np.ndarray:
    if raw is not None:
        return tensor_from_bytes(tensor.name, tensor.datatype, tensor.shape, raw)
    field = _CONTENT_FIELDS.get(tensor.datatype)
    values = getattr(tensor.contents, field) if field else []
    return tensor_from_values(tensor.name, tensor.datatype, tensor.shape, values)


def decode_inputs(
    call: InferCall, shm: SharedMemoryRegistry, leases: contextlib.ExitStack
) -> dict[str, np.ndarray]:
    """The request's tensors: from shared memory, raw_input_contents or typed contents.

    As Triton does, raw_input_contents go, in order, to the inputs not in shared memory.
    Shared-memory inputs stay leased (mapped) until `leases` closes.
    """
    request = call.request
    raw = call.raw or list(request.raw_input_contents)
    feeds, index = {}, 0
    for tensor in request.inputs:
        ref = tensor_ref(tensor.name, tensor.parameters)
        if ref is not None:
            if tensor.HasField("contents"):
                raise InvalidInputError(
                    f"input {tensor.name!r}: give its data in shared memory or in contents, "
                    "not both"
                )
            data = leases.enter_context(shm.lease(ref))
        elif raw:
            if index >= len(raw):
                raise InvalidInputError(
                    f"{len(raw)} raw_input_contents for more inputs; give one per input that "
                    "is not in shared memory"
                )
            data, index = raw[index], index + 1
        else:
            data = None
        feeds[tensor.name] = _decode_input(tensor, data)
    if index != len(raw):
        raise InvalidInputError(
            f"{len(raw)} raw_input_contents for {index} input(s) not in shared memory; give "
            "one per such input"
        )
    return feeds


async def read_call(context: grpc.aio.ServicerContext) -> InferCall | pb.ModelInferRequest:
    """The call's one ModelInferRequest, read from a stream-unary call's context."""
    call = await context.read()
    if call is grpc.aio.EOF:
        raise InvalidInputError("the call carried no ModelInferRequest message")
    if not isinstance(call, InferCall | pb.ModelInferRequest):  # the interceptors' UNDECODABLE
        raise InvalidInputError("the request is not a valid ModelInferRequest message (protobuf)")
    return call


def tensor_ref(name: str, parameters) -> TensorRef | None:
    """The shared-memory reference in a tensor's parameters, or None (Triton's parameters)."""
    if REGION_PARAMETER not in parameters:
        return None
    region = parameters[REGION_PARAMETER].string_param
    if BYTE_SIZE_PARAMETER not in parameters:
        raise InvalidInputError(
            f"tensor {name!r}: {REGION_PARAMETER} given without {BYTE_SIZE_PARAMETER}"
        )
    return TensorRef(
        region,
        _int_parameter(parameters.get(OFFSET_PARAMETER)),
        _int_parameter(parameters[BYTE_SIZE_PARAMETER]),
    )


def _int_parameter(value: pb.InferParameter | None) -> int:
    if value is None:
        return 0
    kind = value.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidInputError("shared-memory offset and byte size must be integer parameters")
    return int(getattr(value, kind))


def _wire_buffer(array: np.ndarray) -> np.ndarray:
    """The array as C-contiguous little-endian (a copy only when it is not already)."""
    array = np.ascontiguousarray(array)
    if array.dtype != little_endian(array.dtype):
        array = array.astype(little_endian(array.dtype))
    return array


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

    def __init__(
        self, plane: DataPlane, shm: SharedMemoryRegistry | None = None, intake_limit: int = 0
    ) -> None:
        """`intake_limit`: ModelInfer calls held at once before their model is known (0: the
        sum of the serving models' admission places; `serving.admission.Intake`)."""
        self._plane = plane
        self._shm = shm if shm is not None else SharedMemoryRegistry()
        self.intake = Intake(plane.admission, plane.ready_versions, intake_limit)

    async def ServerLive(self, request, context):  # noqa: N802
        """Liveness: the process answers."""
        return pb.ServerLiveResponse(live=self._plane.server_live())

    async def ServerReady(self, request, context):  # noqa: N802
        """Readiness: serving what it can (a broken model is not ready, the server is)."""
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

    async def ModelInferUnread(  # noqa: N802
        self, calls: AsyncIterator[InferCall], context: grpc.aio.ServicerContext
    ) -> InferReply:
        """ModelInfer as the server registers it (stream-unary on the wire, which a unary client
        cannot tell): the intake admits the call before its one message is read, so a refusal
        costs no receiving or parsing (the client's upload ends with the call).

        The message is read with `context.read`, not by iterating `calls`: grpc.aio's request
        iterator is an async generator in a reference cycle with its receiver, suspended at the
        `yield` of the message it handed out, so each call's message (2 MB for one 416x416 FP32
        image) would stay alive until the cyclic garbage collector's next full pass, long after
        the call; read this way it is freed when this handler returns."""
        start = time.perf_counter()
        try:
            serving = self.intake.take(deadline_of(context))
        except VisionError as exc:
            self._count_unread(exc, time.perf_counter() - start)
            raise
        assigned = None
        try:
            call = await read_call(context)
            assigned = self.intake.assign(call.model_name, serving)  # whose place, from now on
            return await self.ModelInfer(call, context)
        finally:
            self.intake.release(assigned)

    def _count_unread(self, error: Exception, seconds: float) -> None:
        """A call refused before its message (and so its model) was known: counted with an
        empty model and version."""
        metrics = self._plane.metrics
        if isinstance(error, DeadlineExceededError):
            metrics.observe_abandoned(INFER_API, "", "", "deadline")
        metrics.observe_request(INFER_API, "", "", type(error).__name__, seconds)

    async def ModelInfer(self, call, context):  # noqa: N802
        """Raw or shared-memory tensors through the model's batcher."""
        if isinstance(call, pb.ModelInferRequest):  # a caller without the lean codec
            call = InferCall(call)
        request = call.request
        with contextlib.ExitStack() as leases:
            feeds = decode_inputs(call, self._shm, leases)
            result = await self._plane.infer(
                request.model_name, request.model_version, feeds, deadline_of(context)
            )
            del feeds
        return self._reply(request, result)

    def _reply(self, request: pb.ModelInferRequest, result) -> InferReply:
        outputs = result.outputs
        wanted = {o.name: tensor_ref(o.name, o.parameters) for o in request.outputs}
        wanted = wanted or dict.fromkeys(outputs)
        unknown = [name for name in wanted if name not in outputs]
        if unknown:
            raise InvalidInputError(f"unknown output(s) {unknown}; the model has {list(outputs)}")
        reply = InferReply(
            pb.ModelInferResponse(
                model_name=result.model, model_version=result.version, id=request.id
            )
        )
        for name, ref in wanted.items():
            array = outputs[name]
            reply.response.outputs.add(
                name=name, datatype=datatype_of(str(array.dtype)), shape=list(array.shape)
            )
            if ref is None:
                reply.raw.append(_wire_buffer(array))
            else:  # as Triton: an empty raw entry keeps the list parallel to `outputs`
                write_to_region(name, array, ref, self._shm)
                reply.raw.append(b"")
        return reply

    async def SystemSharedMemoryStatus(self, request, context):  # noqa: N802
        """Registered system shared-memory regions (all, or the one named)."""
        regions = self._shm.status(request.name)
        status = pb.SystemSharedMemoryStatusResponse.RegionStatus
        return pb.SystemSharedMemoryStatusResponse(
            regions={
                r.name: status(name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size)
                for r in regions
            }
        )

    async def SystemSharedMemoryRegister(self, request, context):  # noqa: N802
        """Map a region of a POSIX shared-memory object under a name."""
        self._shm.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request, context):  # noqa: N802
        """Forget a region (or all); it is unmapped once requests using it are done."""
        self._shm.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

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
