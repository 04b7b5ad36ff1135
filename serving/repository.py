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
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from serving.batcher import BatchStats, DynamicBatcher
from vision.config import ModelConfig, load_config
from vision.errors import ModelNotFoundError, ModelUnavailableError
from vision.loader import LoadedModel, explain_file_of, load_model, open_explainer, version_numbers
from vision.pipeline import Pipeline
from vision.runtime import OnnxModel
from vision.xai.explainer import Explainer

log = logging.getLogger(__name__)

READY, LOADING, UNAVAILABLE = "READY", "LOADING", "UNAVAILABLE"
NO_EXPLAIN = "NONE"  # explain state of a version whose config names no explain graph
StatsObserver = Callable[[str, str, BatchStats], None]
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:'\"]+/)+([^\s/:'\"]*)")


class ExplainNotReadyError(ModelUnavailableError):
    """The version serves plain inference; its explain graph is still loading (UNAVAILABLE)."""


@dataclass
class ModelVersion:
    """One loaded, servable version of a model.

    `explain_state`: NONE (the config names no explain graph), LOADING (it loads in the
    background after the version is READY), READY, or UNAVAILABLE (`explain_reason` says why).
    """

    name: str
    version: str
    config: ModelConfig
    session: OnnxModel
    pipeline: Pipeline
    batcher: DynamicBatcher
    loaded: LoadedModel | None = None
    explain_state: str = NO_EXPLAIN
    explain_reason: str = ""
    loaded_at: float = field(default_factory=time.time)
    _explainer: Explainer | None = None

    @classmethod
    def of(cls, loaded: LoadedModel, batcher: DynamicBatcher) -> ModelVersion:
        """A servable version: what `vision.loader` loaded, plus its batcher."""
        version = cls(
            loaded.name,
            loaded.version,
            loaded.config,
            loaded.session,
            loaded.pipeline,
            batcher,
            loaded,
        )
        if loaded.explainer is not None:
            version.explain_ready_with(loaded.explainer)
        elif loaded.config.explain.file:
            version.explain_state = LOADING
        return version

    @property
    def explain_ready(self) -> bool:
        """True once the explain graph is loaded (what metadata reports as `explainable`)."""
        return self.explain_state == READY

    @property
    def explainer(self) -> Explainer | None:
        """The explain graph's runner; None when the config names none.

        Raises ExplainNotReadyError (UNAVAILABLE, with a retry hint) while it is still loading,
        and ModelUnavailableError with the reason when it failed to load: never waits.
        """
        if self.explain_state == LOADING:
            raise ExplainNotReadyError(
                f"model {self.name!r} version {self.version}: its explain graph is still loading "
                "(plain inference is ready); retry in a few seconds"
            )
        if self.explain_state == UNAVAILABLE:
            raise ModelUnavailableError(
                f"model {self.name!r} version {self.version}: explain graph unavailable: "
                f"{self.explain_reason}"
            )
        return self._explainer

    def explain_ready_with(self, explainer: Explainer) -> None:
        """Record the loaded explain graph."""
        self._explainer, self.explain_state, self.explain_reason = explainer, READY, ""

    def explain_failed(self, reason: str) -> None:
        """Record why the explain graph could not be loaded."""
        self._explainer, self.explain_state, self.explain_reason = None, UNAVAILABLE, reason


@dataclass
class ModelEntry:
    """A model folder: its served versions, or the reason it cannot serve.

    `failures`: version -> why it failed its last load ("" key: the model itself, e.g. its
    config). A failed reload keeps the last good versions serving (state stays READY).
    `settled`: its first load has finished, READY or not (server readiness waits for it).
    """

    name: str
    path: Path
    config: ModelConfig | None = None
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    state: str = UNAVAILABLE
    reason: str = ""
    failures: dict[str, str] = field(default_factory=dict)
    settled: bool = False

    def latest(self) -> ModelVersion | None:
        """The highest-numbered served version, or None when none is served."""
        if not self.versions:
            return None
        return self.versions[max(self.versions, key=int)]


def public_reason(error: BaseException | str, root: Path) -> str:
    """A load-failure reason fit for clients, logs and metrics: paths inside the repository
    become relative (`model/1/model.onnx`), any other absolute path its file name."""
    text = str(error)
    for prefix in {str(root.resolve()), str(root.absolute()), str(root)}:
        if prefix not in (".", ""):
            text = text.replace(prefix.rstrip("/") + "/", "")
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "<path>", text)


class ModelRepository:
    """Loads, serves and unloads the models of one repository folder.

    Versions load in parallel; explain graphs load in the background, one at a time, once the
    plain versions are READY (`ModelVersion.explainer` answers UNAVAILABLE until then).
    """

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
        self._explain_tasks: set[asyncio.Task] = set()
        self._explain_slot: asyncio.Semaphore | None = None
        self.initial_load_done = False

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
            if version in entry.failures:
                raise ModelUnavailableError(
                    f"model {name!r} version {version} failed to load: "
                    f"{entry.failures[version]}; served versions: {served}"
                )
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; served versions: {served}"
            )
        return entry.versions[version]

    async def load_all(self) -> None:
        """Load every model folder (plain graphs first, all in parallel; explain graphs after,
        in the background); failures are recorded, not raised."""
        names = self.names_on_disk()
        await asyncio.gather(*(self._load(n, raise_errors=False, explain=False) for n in names))
        self.initial_load_done = True
        for entry in self.entries():
            self._start_explain(entry.versions.values())

    async def load(self, name: str, raise_errors: bool = True) -> ModelEntry:
        """(Re)load model `name` from disk, swapping versions in without dropping requests.

        A version that fails to load leaves the version it would replace serving; the entry's
        `failures` say why.
        """
        return await self._load(name, raise_errors, explain=True)

    async def _load(self, name: str, raise_errors: bool, explain: bool) -> ModelEntry:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            entry = self._entries.get(name) or ModelEntry(name, self.root / name)
            self._entries[name] = entry
            if not entry.versions:
                self._set_state(entry, LOADING, "loading")
            try:
                config, versions, failures = await self._build(name, entry.path)
            except Exception as exc:  # noqa: BLE001 - any load failure is recorded with its reason
                config, versions, failures = entry.config, {}, {"": public_reason(exc, self.root)}
            try:
                return await self._settle(entry, config, versions, failures, raise_errors)
            finally:
                entry.settled = True
                if explain:
                    self._start_explain(versions.values())

    async def _settle(
        self,
        entry: ModelEntry,
        config: ModelConfig | None,
        versions: dict[str, ModelVersion],
        failures: dict[str, str],
        raise_errors: bool,
    ) -> ModelEntry:
        """Swap the new versions in; keep the old ones where the new ones failed."""
        entry.failures = failures
        for version, reason in failures.items():
            log.error("model %s %s failed to load: %s", entry.name, version or "", reason)
        kept = {v: m for v, m in entry.versions.items() if v in failures or not versions}
        old = {v: m for v, m in entry.versions.items() if v not in kept}
        entry.versions = {**kept, **versions}
        if config is not None and versions:
            entry.config = config
        if entry.versions:
            self._set_state(entry, READY, "")
        else:
            self._set_state(entry, UNAVAILABLE, "failed to load: " + _summary(failures))
        await self._close_versions(old)
        if failures and raise_errors:
            serving = ", ".join(sorted(entry.versions, key=int)) or "none"
            raise ModelUnavailableError(
                f"model {entry.name!r} failed to load: {_summary(failures)}; serving versions: "
                f"{serving}"
            )
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
        for task in list(self._explain_tasks):
            task.cancel()
        await asyncio.gather(*self._explain_tasks, return_exceptions=True)
        for entry in self.entries():
            old, entry.versions = entry.versions, {}
            self._set_state(entry, UNAVAILABLE, "server shutting down")
            await self._close_versions(old, drain_timeout)

    async def explain_loaded(self) -> None:
        """Wait until every background explain-graph load has finished (tests, benches)."""
        while self._explain_tasks:
            await asyncio.gather(*self._explain_tasks, return_exceptions=True)

    async def _build(
        self, name: str, path: Path
    ) -> tuple[ModelConfig, dict[str, ModelVersion], dict[str, str]]:
        """The chosen versions, loaded in parallel, and the reasons of those that failed."""
        if not path.is_dir():
            raise ModelNotFoundError(f"no folder {name!r} in the model repository")
        loop = asyncio.get_running_loop()
        config = await loop.run_in_executor(self._executor, load_config, path)
        if config.name != name:
            raise ModelUnavailableError(f"config name {config.name!r} differs from folder {name!r}")
        chosen = [
            str(n) for n in config.version_policy.select(version_numbers(path, config.model_file))
        ]
        if not chosen:
            raise ModelUnavailableError(f"no version folder with {config.model_file} selected")
        results = await asyncio.gather(
            *(
                loop.run_in_executor(self._executor, self._build_version, config, path, number)
                for number in chosen
            ),
            return_exceptions=True,
        )
        versions, failures = {}, {}
        for number, result in zip(chosen, results, strict=True):
            if isinstance(result, BaseException):
                failures[number] = public_reason(result, self.root)
            else:
                versions[number] = result
                result.batcher.start()
        return config, versions, failures

    def _build_version(self, config: ModelConfig, model_dir: Path, version: str) -> ModelVersion:
        """The plain version loaded by `vision.loader`, warmed up, with its batcher (its
        explain graph comes later, `_start_explain`)."""
        loaded = load_model(model_dir, version, config=config, explain=False)
        if config.runtime.warmup:
            loaded.session.warmup(warmup_batches(config, loaded.session.providers))
        observer = None
        if self._observer is not None:

            def observer(stats: BatchStats) -> None:
                self._observer(config.name, version, stats)

        name = f"{config.name}:{version}"
        batcher = DynamicBatcher(loaded.session.run, config.batching, name, observer)
        return ModelVersion.of(loaded, batcher)

    def _start_explain(self, versions) -> None:
        """Load the explain graphs of `versions` in the background, one at a time."""
        for version in versions:
            if version.explain_state == LOADING:
                task = asyncio.get_running_loop().create_task(self._load_explain(version))
                self._explain_tasks.add(task)
                task.add_done_callback(self._explain_tasks.discard)

    async def _load_explain(self, version: ModelVersion) -> None:
        if self._explain_slot is None:
            self._explain_slot = asyncio.Semaphore(1)
        async with self._explain_slot:
            loop = asyncio.get_running_loop()
            try:
                explainer = await loop.run_in_executor(self._executor, _open_explainer, version)
            except Exception as exc:  # noqa: BLE001 - the version keeps serving without it
                reason = public_reason(exc, self.root)
                log.error(
                    "model %s %s: explain graph failed: %s", version.name, version.version, reason
                )
                version.explain_failed(reason)
                return
            version.explain_ready_with(explainer)
            log.info("model %s %s: explain graph ready", version.name, version.version)

    async def _close_versions(self, versions: dict[str, ModelVersion], timeout: float = 30.0):
        await asyncio.gather(*(v.batcher.close(timeout) for v in versions.values()))

    def _set_state(self, entry: ModelEntry, state: str, reason: str) -> None:
        entry.state, entry.reason = state, reason
        if self._on_state_change is not None:
            self._on_state_change(entry.name, state)


def _open_explainer(version: ModelVersion) -> Explainer:
    loaded = version.loaded
    return open_explainer(
        version.config, explain_file_of(loaded), loaded.session, loaded.session.spec
    )


def _summary(failures: dict[str, str]) -> str:
    return "; ".join(f"version {v}: {r}" if v else r for v, r in sorted(failures.items()))


def warmup_batches(
    config: ModelConfig, providers: list[str] | tuple[str, ...] = ()
) -> tuple[int, ...]:
    """Batch sizes to warm up: on CPU one run (the first-run costs are shape-independent, and
    ONNX Runtime plans memory per run: `bench.coldstart --profile` measures a cold batch-max run
    against a warm one). TensorRT builds its engine for the range of shapes it has seen, so
    batch 1 and the max. CUDA (cuDNN) searches its convolution algorithms for each new input
    shape on its first run (ORT's default `cudnn_conv_algo_search: EXHAUSTIVE`), so every size
    the batcher can form, 1 to the max: otherwise the first batch of each size pays the search
    while serving."""
    largest = max(1, config.batching.max_batch_size)
    if all(p == "CPUExecutionProvider" for p in providers):
        return (1,)
    if providers and providers[0] == "CUDAExecutionProvider":
        return tuple(range(1, largest + 1))
    return tuple(sorted({1, largest}))
