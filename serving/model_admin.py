"""Model listing, metadata, readiness, load, unload and statistics: the data plane's model
management (a mixin of `DataPlane`), in domain terms (`serving/model_info.py`)."""

from __future__ import annotations

from collections.abc import Callable

from serving.model_info import (
    ModelIndexEntry,
    ModelMetadata,
    ModelStatus,
    ServerMetadata,
    VisionModelInfo,
    model_metadata,
    model_status,
    repository_index,
    server_ready,
    vision_model_info,
)
from serving.repository import READY, ModelRepository, ModelVersion
from serving.statistics import StatisticsBook, VersionStatistics
from vision.errors import ModelNotFoundError, VisionError


class ModelAdmin:
    """What a data plane answers about its models; it supplies the repository, the statistics
    book, the shutdown flag and `_get` (the version to serve with, or why not)."""

    _repository: ModelRepository
    stats: StatisticsBook
    _shutting_down: bool
    _get: Callable[[str, str], ModelVersion]

    def server_live(self) -> bool:
        """The process is up (KServe liveness)."""
        return True

    def server_ready(self) -> bool:
        """KServe readiness, "serving what it can": every model has finished its first load
        (READY or failed with a reason), at least one is READY, and not shutting down."""
        return not self._shutting_down and server_ready(self._repository.entries())

    def server_metadata(self) -> ServerMetadata:
        """Server name, version and the KServe extensions served."""
        return ServerMetadata()

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether `name` (at `version`, or its latest) can serve now."""
        try:
            self._get(name, version)
        except VisionError:  # unknown, unavailable, unloading, marked failed: not ready
            return False
        return True

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        """KServe metadata: versions, platform, graph inputs and outputs."""
        model = self._repository.get(name, version)
        return model_metadata(model, self._repository.entry(name))

    def model_info(self, name: str, version: str = "") -> VisionModelInfo:
        """vision.v1 metadata: config, providers, explainability."""
        return vision_model_info(self._repository.get(name, version))

    def ready_versions(self) -> list[ModelVersion]:
        """The latest version of every READY model: where a call not yet read may go."""
        entries = self._repository.entries()
        return [e.latest() for e in entries if e.state == READY and e.latest() is not None]

    def list_models(self) -> list[ModelStatus]:
        """Every model the repository knows, with its versions and states."""
        return [model_status(e) for e in self._repository.entries()]

    def repository_index(self, ready_only: bool = False) -> list[ModelIndexEntry]:
        """KServe repository index: models on disk or loaded, a row per version."""
        repo = self._repository
        return repository_index(repo.names_on_disk(), repo.entries(), ready_only)

    async def load_model(self, name: str) -> None:
        """(Re)load model folder `name`; NOT_FOUND when the repository has no such folder."""
        if name not in self._repository.names_on_disk():
            raise ModelNotFoundError(f"no folder with config.yaml for {name!r} in the repository")
        await self._repository.load(name)

    async def unload_model(self, name: str) -> None:
        """Stop serving `name`; its queued requests finish first."""
        await self._repository.unload(name)

    def model_statistics(
        self, name: str = "", version: str = ""
    ) -> dict[tuple[str, str], VersionStatistics]:
        """KServe statistics per (model, version), filtered by name and version when given."""
        if name:
            self._repository.entry(name)  # NOT_FOUND for an unknown model
        return {
            key: value
            for key, value in sorted(self.stats.snapshot().items())
            if (not name or key[0] == name) and (not version or key[1] == version)
        }
