"""The gRPC server: both APIs (vision.v1, KServe v2) on one port, health, reflection (when on).

The composition root (`app/server.py`) builds it over a data plane and starts it.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from protos.inference import grpc_service_pb2
from protos.vision.v1 import vision_pb2, vision_pb2_grpc
from serving.config import ServerConfig
from serving.dataplane import DataPlane
from serving.rpc.interceptors import AuthInterceptor, ErrorMappingInterceptor
from serving.rpc.kserve_servicer import KServeServicer
from serving.rpc.kserve_wire import add_kserve_servicer
from serving.rpc.volume_servicer import VolumeServicer
from serving.security.guard import Guard
from serving.shared_memory import SharedMemoryRegistry

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _interceptors(guard: Guard | None) -> list[grpc.aio.ServerInterceptor]:
    """Auth and rate limit first (when on), then error mapping: the one place errors become
    codes."""
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorMappingInterceptor()]
    if guard is not None and (guard.enabled or guard.limiter is not None):
        interceptors.insert(0, AuthInterceptor(guard))
    return interceptors


def _window_options(window_bytes: int) -> list[tuple[str, int]]:
    """Channel arguments that hold each HTTP/2 stream's window at `window_bytes` (none: 0)."""
    if window_bytes <= 0:
        return []
    return [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", window_bytes)]


def build_grpc_server(
    plane: DataPlane,
    health: health_aio.HealthServicer,
    config: ServerConfig,
    shared_memory: SharedMemoryRegistry | None = None,
    guard: Guard | None = None,
    options: Sequence[tuple[str, int | str]] = (),
    maximum_concurrent_rpcs: int | None = None,
) -> grpc.aio.Server:
    """A gRPC server with every service registered; the caller adds a port and starts it.

    `shared_memory` holds the KServe system shared-memory regions (the caller closes it);
    `guard` checks tokens, roles and the rate limit (`serving/security`).
    `maximum_concurrent_rpcs` (default: `config.grpc_max_concurrent_rpcs`, 0 off) is grpc.aio's
    own limit: calls beyond it are refused RESOURCE_EXHAUSTED before their message is read or
    any handler runs. `options`: more channel arguments (`bench/shed_cost.py` measures HTTP/2
    window settings with them; `config.grpc_stream_window_bytes` holds the window, see
    docs/overload-and-faults.md).
    """
    size = config.max_message_bytes
    options = [*_window_options(config.grpc_stream_window_bytes), *options]
    if maximum_concurrent_rpcs is None:
        maximum_concurrent_rpcs = config.grpc_max_concurrent_rpcs or None
    server = grpc.aio.server(
        interceptors=_interceptors(guard),
        options=[
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", int(config.reuse_port)),
            *options,
        ],
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    vision_pb2_grpc.add_VisionServiceServicer_to_server(VolumeServicer(plane), server)
    add_kserve_servicer(KServeServicer(plane, shared_memory, config.kserve_intake), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if config.security.reflection:
        names = (
            vision_pb2.DESCRIPTOR.services_by_name["VisionService"].full_name,
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
    return server
