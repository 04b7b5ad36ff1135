"""The model repository: folders of ONNX versions plus one config file, loaded at run time.

Layout: `<repo>/<model>/config.yaml` and `<repo>/<model>/<version>/model.onnx`. Each served
version is loaded by `vision.loader.load_model` (session, pipeline, explainer); the repository
adds a batcher per version, warms it up, then swaps it in atomically; the version it replaces
drains its queue before it is dropped, so no in-flight request is lost. A model that fails to
load is kept as UNAVAILABLE with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from serving.batcher import BatchStats, DynamicBatcher
from vision.config import ModelConfig, load_config
from vision.errors import ModelNotFoundError, ModelUnavailableError
from vision.loader import LoadedModel, load_model, version_numbers
from vision.pipeline import Pipeline
from vision.runtime import OnnxModel
from vision.xai.explainer import Explainer

log = logging.getLogger(__name__)

READY, LOADING, UNAVAILABLE = "READY", "LOADING", "UNAVAILABLE"
StatsObserver = Callable[[str, str, BatchStats], None]


@dataclass
class ModelVersion:
    """One loaded, servable version of a model."""

    name: str
    version: str
    config: ModelConfig
    session: OnnxModel
    pipeline: Pipeline
    batcher: DynamicBatcher
    explainer: Explainer | None = None
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def of(cls, loaded: LoadedModel, batcher: DynamicBatcher) -> ModelVersion:
        """A servable version: what `vision.loader` loaded, plus its batcher."""
        return cls(
            loaded.name,
            loaded.version,
            loaded.config,
            loaded.session,
            loaded.pipeline,
            batcher,
            loaded.explainer,
        )


@dataclass
class ModelEntry:
    """A model folder: its served versions, or the reason it cannot serve."""

    name: str
    path: Path
    config: ModelConfig | None = None
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    state: str = UNAVAILABLE
    reason: str = ""

    def latest(self) -> ModelVersion | None:
        """The highest-numbered served version, or None when none is served."""
        if not self.versions:
            return None
        return self.versions[max(self.versions, key=int)]


class ModelRepository:
    """Loads, serves and unloads the models of one repository folder."""

    def __init__(
        self,
        root: str | Path,
        executor: Executor | None = None,
        observer: StatsObserver | None = None,
        on_state_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self._executor = executor
        self._observer = observer
        self._on_state_change = on_state_change
        self._entries: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def names_on_disk(self) -> list[str]:
        """Model folders in the repository (those with a config file)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "config.yaml").is_file())

    def entries(self) -> list[ModelEntry]:
        """All model entries, sorted by name."""
        return [self._entries[n] for n in sorted(self._entries)]

    def entry(self, name: str) -> ModelEntry:
        """The entry of model `name`; raises ModelNotFoundError if there is none."""
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ModelNotFoundError(f"no model named {name!r}; models: {known}")
        return self._entries[name]

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The version to serve a request with; raises NotFound or Unavailable."""
        entry = self.entry(name)
        if entry.state != READY:
            raise ModelUnavailableError(f"model {name!r} is {entry.state}: {entry.reason}")
        if not version:
            return entry.latest()
        if version not in entry.versions:
            served = ", ".join(sorted(entry.versions, key=int))
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; served versions: {served}"
            )
        return entry.versions[version]

    async def load_all(self) -> None:
        """Load every model folder; failures are recorded, not raised."""
        await asyncio.gather(
            *(self.load(name, raise_errors=False) for name in self.names_on_disk())
        )

    async def load(self, name: str, raise_errors: bool = True) -> ModelEntry:
        """(Re)load model `name` from disk, swapping versions in without dropping requests."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            path = self.root / name
            entry = self._entries.get(name) or ModelEntry(name, path)
            self._entries[name] = entry
            if not entry.versions:
                self._set_state(entry, LOADING, "loading")
            try:
                config, versions = await self._build(name, path)
            except Exception as exc:  # noqa: BLE001 - any load failure marks the model UNAVAILABLE
                reason = f"failed to load: {exc}"
                log.error("model %s %s", name, reason)
                old = entry.versions
                entry.versions = {}
                self._set_state(entry, UNAVAILABLE, reason)
                await self._close_versions(old)
                if raise_errors:
                    raise ModelUnavailableError(f"model {name!r} {reason}") from exc
                return entry
            old, entry.config, entry.versions = entry.versions, config, versions
            self._set_state(entry, READY, "")
            await self._close_versions(old)
            return entry

    async def unload(self, name: str, drain_timeout: float = 30.0) -> None:
        """Stop serving `name`; queued requests finish first."""
        entry = self.entry(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            old, entry.versions = entry.versions, {}
            self._set_state(entry, UNAVAILABLE, "unloaded")
            await self._close_versions(old, drain_timeout)

    async def close(self, drain_timeout: float = 30.0) -> None:
        """Unload every model for shutdown; queued requests finish first."""
        for entry in self.entries():
            old, entry.versions = entry.versions, {}
            self._set_state(entry, UNAVAILABLE, "server shutting down")
            await self._close_versions(old, drain_timeout)

    async def _build(self, name: str, path: Path) -> tuple[ModelConfig, dict[str, ModelVersion]]:
        if not path.is_dir():
            raise ModelNotFoundError(f"no folder {path}")
        loop = asyncio.get_running_loop()
        config = await loop.run_in_executor(self._executor, load_config, path)
        if config.name != name:
            raise ModelUnavailableError(f"config name {config.name!r} differs from folder {name!r}")
        chosen = config.version_policy.select(version_numbers(path, config.model_file))
        if not chosen:
            raise ModelUnavailableError(f"no version folder with {config.model_file} selected")
        versions = {}
        for number in chosen:
            versions[str(number)] = await loop.run_in_executor(
                self._executor, self._build_version, config, path, str(number)
            )
        for version in versions.values():
            version.batcher.start()
        return config, versions

    def _build_version(self, config: ModelConfig, model_dir: Path, version: str) -> ModelVersion:
        """The version loaded by `vision.loader` (session, pipeline, explainer), warmed up, with
        its batcher."""
        loaded = load_model(model_dir, version, config=config)
        if config.runtime.warmup:
            loaded.session.warmup(_warmup_batches(config))
        observer = None
        if self._observer is not None:

            def observer(stats: BatchStats) -> None:
                self._observer(config.name, version, stats)

        name = f"{config.name}:{version}"
        batcher = DynamicBatcher(loaded.session.run, config.batching, name, observer)
        return ModelVersion.of(loaded, batcher)

    async def _close_versions(self, versions: dict[str, ModelVersion], timeout: float = 30.0):
        await asyncio.gather(*(v.batcher.close(timeout) for v in versions.values()))

    def _set_state(self, entry: ModelEntry, state: str, reason: str) -> None:
        entry.state, entry.reason = state, reason
        if self._on_state_change is not None:
            self._on_state_change(entry.name, state)


def _warmup_batches(config: ModelConfig) -> tuple[int, ...]:
    sizes = {1, max(1, config.batching.max_batch_size)}
    return tuple(sorted(sizes))
