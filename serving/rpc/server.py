"""Assembles the gRPC server: both APIs on one port, health, reflection, metrics, shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from protos.inference import grpc_service_pb2, grpc_service_pb2_grpc
from protos.vision.v1 import vision_pb2, vision_pb2_grpc
from serving.batcher import BatchStats
from serving.config import ServerConfig
from serving.dataplane import DataPlane
from serving.metrics import Metrics
from serving.repository import READY, ModelRepository
from serving.rpc.interceptors import ApiKeyInterceptor, ErrorMappingInterceptor
from serving.rpc.kserve_servicer import KServeServicer
from serving.rpc.vision_servicer import VisionServicer
from serving.statistics import StatisticsBook

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class VisionServer:
    """One process: repository, data plane, gRPC server and metrics endpoint."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.stats = StatisticsBook()
        self.executor = ThreadPoolExecutor(config.worker_threads, thread_name_prefix="vision")
        self.health = health_aio.HealthServicer()
        self.repository = ModelRepository(
            config.models, self.executor, self._observe_batch, self._on_state_change
        )
        self.plane = DataPlane(
            self.repository, self.metrics, self.stats, self.executor, config.max_image_pixels
        )
        self.metrics.watch_queue_depths(self._queue_depths)
        self.grpc_port = 0
        self._server: grpc.aio.Server | None = None
        self._http = None
        self._stopped = asyncio.Event()

    def _observe_batch(self, name: str, version: str, batch: BatchStats) -> None:
        self.metrics.observe_batch(name, version, batch)
        self.stats.record_batch(name, version, batch)

    def _queue_depths(self) -> dict[tuple[str, str], int]:
        return {
            (e.name, v.version): v.batcher.depth
            for e in self.repository.entries()
            for v in e.versions.values()
        }

    def _on_state_change(self, name: str, state: str) -> None:
        status = SERVING if state == READY else NOT_SERVING
        asyncio.get_running_loop().create_task(self.health.set(name, status))

    def _build_grpc(self) -> grpc.aio.Server:
        interceptors = [ErrorMappingInterceptor()]
        if self.config.api_key:
            interceptors.insert(0, ApiKeyInterceptor(self.config.api_key))
        size = self.config.max_message_bytes
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                ("grpc.so_reuseport", 0),
            ],
        )
        vision_pb2_grpc.add_VisionServiceServicer_to_server(VisionServicer(self.plane), server)
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            KServeServicer(self.plane), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (
            vision_pb2.DESCRIPTOR.services_by_name["VisionService"].full_name,
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        return server

    async def start(self) -> None:
        """Load the repository, then listen. Models that fail to load are UNAVAILABLE."""
        started = time.monotonic()
        await self.repository.load_all()
        self._server = self._build_grpc()
        address = f"{self.config.host}:{self.config.grpc_port}"
        self.grpc_port = self._server.add_insecure_port(address)
        if self.grpc_port == 0:
            raise OSError(f"cannot listen on {address} (port in use?)")
        await self._server.start()
        if self.config.http_port >= 0:
            self._http = self.metrics.serve_http(self.config.http_port, self.config.host)
        await self.health.set("", SERVING)
        ready = [e.name for e in self.repository.entries() if e.state == READY]
        log.info(
            "SERVING gRPC on port %d, %d model(s) ready %s, started in %.2f s",
            self.grpc_port,
            len(ready),
            ready,
            time.monotonic() - started,
        )

    async def stop(self) -> None:
        """Stop accepting, finish in-flight and queued requests (bounded), release everything."""
        if self._server is None or self._stopped.is_set():
            return
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace=self.config.drain_timeout_s)
        await self.repository.close(self.config.drain_timeout_s)
        if self._http is not None:
            self._http.shutdown()
        self.executor.shutdown(wait=False)
        self._stopped.set()
        log.info("stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
