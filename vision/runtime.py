"""One ONNX Runtime session wrapper: provider choice, threads, memory, warm-up, I/O metadata.

Memory: the CPU arena is shrunk at the end of every run (run option
`memory.enable_memory_arena_shrinkage`), so a warm-up or a rare large batch does not stay
resident for the life of the process (`bench/ort_memory.py` has the figures). Graph
optimisation: on CPU a stored optimised graph beside the model (`vision.optimised`, written by
`vision export` or `python -m vision.optimised`) is used when it was made from this very file by
this ONNX Runtime version; otherwise ORT optimises at load, as before.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vision.config import RuntimeSpec
from vision.errors import InvalidInputError
from vision.optimised import stamp_matches, stored_optimised

log = logging.getLogger(__name__)

_PROVIDER_IDS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_AUTO_ORDER = ("tensorrt", "cuda", "cpu")
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(uint16)": "uint16",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True)
class TensorSpec:
    """Name, numpy dtype and shape (-1 for a dynamic dimension) of a model input or output."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def _provider_options(name: str, spec: RuntimeSpec, cache_dir: Path) -> dict[str, str]:
    if name != "tensorrt":
        return {}
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {
        "trt_fp16_enable": str(spec.tensorrt_fp16),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
    }


def choose_providers(spec: RuntimeSpec, cache_dir: Path) -> list[tuple[str, dict[str, str]]]:
    """Providers in preference order: forced by config, or TensorRT > CUDA > CPU as available."""
    available = set(ort.get_available_providers())
    wanted = _AUTO_ORDER if "auto" in spec.providers else spec.providers
    chosen = [
        (_PROVIDER_IDS[name], _provider_options(name, spec, cache_dir))
        for name in wanted
        if _PROVIDER_IDS[name] in available
    ]
    if not chosen:
        raise RuntimeError(
            f"none of the providers {list(wanted)} is available; this onnxruntime has "
            f"{sorted(available)}"
        )
    if _PROVIDER_IDS["cpu"] not in [p for p, _ in chosen]:
        chosen.append((_PROVIDER_IDS["cpu"], {}))  # fallback for ops the GPU providers lack
    return chosen


NVINFER_SONAMES = ("libnvinfer.so.10", "libnvinfer.so.11", "libnvinfer.so.9", "libnvinfer.so.8")


def nvinfer_loadable() -> bool:
    """Whether TensorRT's own library loads here: onnxruntime-gpu lists its TensorRT provider
    whenever it was built with it, and loads it only beside libnvinfer."""
    for soname in NVINFER_SONAMES:
        try:
            ctypes.CDLL(soname)
        except OSError:
            continue
        return True
    return False


def check_loaded(path: Path, spec: RuntimeSpec, requested: list[str], loaded: list[str]) -> None:
    """Say when a GPU provider ORT lists did not load (TensorRT without libnvinfer, say).

    ORT then falls back quietly to what did load. With `providers: auto` that is the intended
    behaviour, logged as a warning; a provider the config forces is an error, so that a model
    meant for TensorRT never runs on the CPU without anyone knowing.
    """
    missing = [p for p in requested if p not in loaded and p != _PROVIDER_IDS["cpu"]]
    if not missing:
        return
    names = {v: k for k, v in _PROVIDER_IDS.items()}
    if "auto" not in spec.providers:
        raise RuntimeError(
            f"{path.name}: runtime.providers asks for {[names[p] for p in missing]}, which "
            f"onnxruntime lists but could not load (it fell back to {loaded}); install the "
            "provider's libraries (TensorRT: libnvinfer; CUDA: the CUDA and cuDNN libraries "
            "this onnxruntime-gpu was built for) or change runtime.providers"
        )
    log.warning(
        "%s: %s listed by onnxruntime but not loaded (missing libraries); running on %s",
        path.name,
        [names[p] for p in missing],
        loaded,
    )


def session_options(spec: RuntimeSpec) -> ort.SessionOptions:
    """The session options of `spec`: threads, spinning, every graph optimisation, CPU arena."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.intra_op_threads
    options.inter_op_num_threads = spec.inter_op_threads
    if not spec.allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def run_options(shrink_arena: bool = True) -> ort.RunOptions:
    """Run options that hand the CPU arena's unused chunks back at the end of every run (with
    `shrink_arena`; else the arena keeps them for the next run)."""
    options = ort.RunOptions()
    if shrink_arena:
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class OnnxModel:
    """An ONNX Runtime session over one model file. `run` is thread-safe (ORT sessions are)."""

    def __init__(self, path: str | Path, spec: RuntimeSpec | None = None) -> None:
        self.path = Path(path)
        spec = spec or RuntimeSpec()
        self.spec = spec
        cache_dir = Path(spec.tensorrt_cache_dir or self.path.parent / ".trt-cache")
        providers = choose_providers(spec, cache_dir)
        cpu_only = [p for p, _ in providers] == [_PROVIDER_IDS["cpu"]]
        stored = stored_optimised(self.path) if cpu_only else None
        self.optimised = False  # True: loaded from the stored optimised graph
        if stored is not None:
            self.session = self._open(stored, spec, providers)
            self.optimised = stamp_matches(
                self.session.get_modelmeta().custom_metadata_map, self.path
            )
        if not self.optimised:
            self.session = self._open(self.path, spec, providers)
        self.run_options = run_options()
        self.providers: list[str] = self.session.get_providers()
        check_loaded(self.path, spec, [p for p, _ in providers], self.providers)
        self.inputs = [self._spec(x) for x in self.session.get_inputs()]
        self.outputs = [self._spec(x) for x in self.session.get_outputs()]
        log.info(
            "loaded %s with providers %s%s",
            self.path.name,
            self.providers,
            " (stored optimised graph)" if self.optimised else "",
        )

    @staticmethod
    def _open(path: Path, spec: RuntimeSpec, providers: list) -> ort.InferenceSession:
        return ort.InferenceSession(
            str(path),
            sess_options=session_options(spec),
            providers=[p for p, _ in providers],
            provider_options=[o for _, o in providers],
        )

    @staticmethod
    def _spec(node: ort.NodeArg) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) else -1 for d in node.shape)
        return TensorSpec(node.name, _ORT_TYPES.get(node.type, node.type), shape)

    @property
    def output_names(self) -> list[str]:
        """Names of the model's outputs, in graph order."""
        return [o.name for o in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; raises InvalidInputError for inputs that do not fit the graph."""
        self.check_feeds(feeds)
        try:
            values = self.session.run(self.output_names, feeds, self.run_options)
        except (ort.capi.onnxruntime_pybind11_state.InvalidArgument, ValueError) as exc:
            raise InvalidInputError(f"model {self.path.parent.parent.name}: {exc}") from exc
        return dict(zip(self.output_names, values, strict=True))

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Raise InvalidInputError unless `feeds` match the input names, dtypes and shapes."""
        expected = {spec.name: spec for spec in self.inputs}
        if set(feeds) != set(expected):
            raise InvalidInputError(
                f"inputs {sorted(feeds)} do not match the model's inputs {sorted(expected)}"
            )
        for name, array in feeds.items():
            spec = expected[name]
            if str(array.dtype) != spec.dtype:
                raise InvalidInputError(
                    f"input {name!r}: dtype {array.dtype} given, the model takes {spec.dtype}"
                )
            if array.ndim != len(spec.shape) or any(
                want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
            ):
                raise InvalidInputError(
                    f"input {name!r}: shape {list(array.shape)} given, the model takes "
                    f"{list(spec.shape)} (-1 = any)"
                )

    def warmup(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run zeros through the graph once per batch size (allocations, TensorRT engine build)."""
        for batch in batch_sizes:
            feeds = {}
            for spec in self.inputs:
                shape = [
                    batch if i == 0 and d == -1 else (d if d > 0 else 64)
                    for i, d in enumerate(spec.shape)
                ]
                feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
            self.session.run(self.output_names, feeds, self.run_options)
