"""The server, composed: repository, data plane, gRPC (vision.v1 + KServe v2), HTTP app.

This is the one place that knows every part; later parts (the DICOM node, the review tool)
plug in here: HTTP routes through `http_mounts`, result recording through the data plane's
result observers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1.health import aio as health_aio
from starlette.routing import BaseRoute

from dicom_node.model import NodeSettings
from review.settings import ReviewSettings
from serving.batcher import BatchStats
from serving.config import ServerConfig
from serving.dataplane import DataPlane
from serving.http import HttpServer, build_http_app
from serving.metrics import Metrics
from serving.repository import READY, ModelRepository
from serving.rpc.server import NOT_SERVING, SERVING, build_grpc_server
from serving.security import AuditLog, GrpcTls, Guard, HttpTls
from serving.security.policy import ADMIN_ROLE, DELEGATED, INFER_ROLE, rule
from serving.shared_memory import SharedMemoryRegistry
from serving.statistics import StatisticsBook

log = logging.getLogger(__name__)
# After the data plane's drain: enough to send the refusals and short calls still on the wire.
TRANSPORT_GRACE_S = 2.0

LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Access rules of the mounted integrations (the KServe and /metrics rules live in
# serving/security/policy.py): STOW-RS runs inference, the node's job and outbox API is
# administration, the review tool signs its own users in (accounts, sessions, its tokens).
MOUNT_RULES = (
    rule("", "/dicomweb/", INFER_ROLE),
    rule("", "/dicom-node/", ADMIN_ROLE),
    rule("", "/review", DELEGATED),
    rule("", "/review/", DELEGATED),
)


class VisionServer:
    """One process: repository, data plane, gRPC server and HTTP app (metrics, KServe REST)."""

    def __init__(
        self,
        config: ServerConfig,
        http_mounts: Sequence[BaseRoute] = (),
        dicom: NodeSettings | None = None,
        review: ReviewSettings | None = None,
    ) -> None:
        self.config = config
        self.dicom_settings = dicom
        self.dicom = None  # the DicomNode, once started
        self.metrics = Metrics()
        security = config.security
        self.audit = AuditLog(security.audit_file)
        self.guard = Guard(security.tokens_file, config.api_key, security.rate_limit, self.audit)
        self.grpc_tls = GrpcTls(security.tls) if security.tls else None
        self.http_tls = HttpTls(security.tls) if security.tls else None
        self.stats = StatisticsBook()
        self.executor = ThreadPoolExecutor(config.worker_threads, thread_name_prefix="vision")
        self.health = health_aio.HealthServicer()
        self.repository = ModelRepository(
            config.models, self.executor, self._observe_batch, self._on_state_change
        )
        self.plane = DataPlane(
            self.repository,
            self.metrics,
            self.stats,
            self.executor,
            config.max_image_pixels,
            max_volume_voxels=config.max_volume_voxels,
        )
        self.metrics.watch_queue_depths(self._queue_depths)
        self.shared_memory = SharedMemoryRegistry()  # KServe system shared-memory regions
        self.http_mounts = tuple(http_mounts)
        self.review = None  # the ReviewTool, when review settings are given
        if review is not None:
            from review.tool import ReviewTool

            self.review = ReviewTool(review).attach(self.plane)
            self.http_mounts = (*self.http_mounts, *self.review.routes())
        self.grpc_port = 0
        self.http_port = 0
        self._server: grpc.aio.Server | None = None
        self._http: HttpServer | None = None
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
        self.audit.record("model_state", model=name, state=state)
        asyncio.get_running_loop().create_task(self.health.set(name, status))

    async def start(self) -> None:
        """Load the repository, then listen. Models that fail to load are UNAVAILABLE."""
        started = time.monotonic()
        self._log_security()
        await self.repository.load_all()
        if self.dicom_settings is not None:
            await self._start_dicom(self.dicom_settings)
        if self.config.grpc_port >= 0:
            await self._start_grpc()
        if self.config.http_port >= 0:
            await self._start_http()
        await self.health.set("", SERVING)
        ready = [e.name for e in self.repository.entries() if e.state == READY]
        log.info(
            "SERVING gRPC on port %s, HTTP on port %s, DICOM on port %s, %d model(s) ready %s, "
            "started in %.2f s",
            self.grpc_port if self._server else "-",
            self.http_port if self._http else "-",
            self.dicom.port if self.dicom else "-",
            len(ready),
            ready,
            time.monotonic() - started,
        )

    async def _start_grpc(self) -> None:
        self._server = build_grpc_server(
            self.plane, self.health, self.config, self.shared_memory, self.guard
        )
        address = f"{self.config.host}:{self.config.grpc_port}"
        if self.grpc_tls is not None:
            self.grpc_port = self._server.add_secure_port(address, self.grpc_tls.credentials())
        else:
            self.grpc_port = self._server.add_insecure_port(address)
        if self.grpc_port == 0:
            raise OSError(f"cannot listen on {address} (port in use?)")
        await self._server.start()

    async def _start_dicom(self, settings: NodeSettings) -> None:
        from dicom_node.node import DicomNode

        known = {s.name for s in self.plane.list_models()}
        self.dicom = DicomNode(settings, self.plane, known)
        if self.review is not None:  # node series become one case each, stored values kept
            self.dicom.add_series_observer(self.review.recorder.series_observer())
        self.http_mounts = (*self.http_mounts, *self.dicom.routes())
        await self.dicom.start()

    async def _start_http(self) -> None:
        app = build_http_app(
            self.plane,
            self.metrics,
            self.http_mounts,
            self.config.max_message_bytes,
            guard=self.guard,
            metrics_mode=self.config.security.metrics,
            mount_rules=MOUNT_RULES,
            shared_memory=self.shared_memory,
        )
        context = self.http_tls.context if self.http_tls is not None else None
        self._http = HttpServer(app, self.config.drain_timeout_s, ssl_context=context)
        self.http_port = await self._http.start(
            self.config.host, self.config.http_port, self.config.reuse_port
        )

    def _log_security(self) -> None:
        """What protects the ports, and a warning when a non-loopback port has nothing."""
        security, guard = self.config.security, self.guard
        tls = "off" if security.tls is None else ("mTLS" if security.tls.mutual else "TLS")
        log.info(
            "security: %s, tokens %s, metrics %s, reflection %s, rate limit %s, audit %s",
            tls,
            f"on ({len(guard.store)})" if guard.enabled else "off",
            security.metrics,
            "on" if security.reflection else "off",
            security.rate_limit or "off",
            security.audit_file or "log only",
        )
        if guard.enabled and not len(guard.store):
            log.warning("the token file has no tokens: every call but health is refused")
        missing = [
            name for name, on in (("TLS", security.tls), ("tokens", guard.enabled)) if not on
        ]
        if missing and self.config.host not in LOOPBACK:
            log.warning(
                "listening on %s without %s: anyone who reaches the ports can use them "
                "(docs/security.md: --tls-cert / --tls-key, --auth-tokens)",
                self.config.host,
                " or ".join(missing),
            )

    def reload_security(self) -> bool:
        """Read the certificates and the token file again and reopen the audit log (SIGHUP);
        False when any part failed (that part keeps what it had, the log says why)."""
        ok = True
        for part, reload in (
            ("gRPC TLS", self.grpc_tls.reload if self.grpc_tls else None),
            ("HTTP TLS", self.http_tls.reload if self.http_tls else None),
            ("tokens", self.guard.reload),
            ("audit log", self.audit.reopen),
        ):
            if reload is None:
                continue
            try:
                reload()
            except (OSError, ValueError) as exc:
                ok = False
                log.error("reload of %s failed, keeping the previous one: %s", part, exc)
        self.audit.record("security_reloaded", ok=ok)
        return ok

    async def stop(self) -> None:
        """Stop accepting, finish in-flight and queued requests (bounded), release everything."""
        if self._stopped.is_set():
            return
        self.plane.begin_shutdown()
        await self.health.enter_graceful_shutdown()
        if self.dicom is not None:
            await self.dicom.stop()
        # New requests are refused UNAVAILABLE while every admitted one finishes; only then do
        # the transports stop, with a short grace: what is left there was never admitted (a call
        # grpc.aio had taken in as shutdown began would otherwise hold it the whole drain).
        await self.plane.drain(self.config.drain_timeout_s)
        http = self._http.stop() if self._http is not None else asyncio.sleep(0)
        grace = min(TRANSPORT_GRACE_S, self.config.drain_timeout_s)
        grpc_stop = self._server.stop(grace=grace) if self._server is not None else asyncio.sleep(0)
        await asyncio.gather(grpc_stop, http)
        if self.review is not None:
            self.review.close()
        await self.repository.close(self.config.drain_timeout_s)
        self.shared_memory.close()
        self.plane.close()
        self.executor.shutdown(wait=False)
        self.audit.close()
        self._stopped.set()
        log.info("stopped")

    async def wait_stopped(self) -> None:
        """Return once `stop` has finished."""
        await self._stopped.wait()
