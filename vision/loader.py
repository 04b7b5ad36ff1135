"""One model loader: a model version from its repository folder, ready to run in-process.

Layout: `<model_dir>/config.yaml` and `<model_dir>/<version>/<config.model_file>` (plus the
explain graph the config names). `load_model` reads the config, picks the version (one rule,
`latest_version`: the highest integer folder that holds the model file), builds the ONNX Runtime
session (`vision.runtime.OnnxModel`), the `Pipeline` and, when asked or named, the `Explainer`.
`LoadedModel.predict` is the server's path without the server: decode, preprocess, run,
postprocess. The server's repository adds its batcher around a `LoadedModel`; `vision eval`,
`vision explain`, `xai-eval`, the export gates and the benches use it as is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vision.config import ModelConfig, RuntimeSpec, load_config
from vision.errors import ConfigError, ModelNotFoundError
from vision.pipeline import Pipeline
from vision.runtime import OnnxModel
from vision.types import DetectionResult, Image, PreprocessMeta, SegmentationResult
from vision.xai.explainer import Explainer

Result = DetectionResult | SegmentationResult
DEFAULT_MODEL_FILE = "model.onnx"


def version_numbers(model_dir: str | Path, model_file: str | None = None) -> list[int]:
    """The versions of a model, ascending: integer folders that hold `model_file` (default: the
    config's, else model.onnx)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelNotFoundError(f"{model_dir}: no such model folder")
    model_file = model_file or _model_file(model_dir)
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / model_file).is_file()
    )


def latest_version(model_dir: str | Path, model_file: str | None = None) -> str:
    """The highest integer version folder holding the model file; ModelNotFoundError says the fix
    when there is none."""
    model_dir = Path(model_dir)
    model_file = model_file or _model_file(model_dir)
    versions = version_numbers(model_dir, model_file)
    if not versions:
        raise ModelNotFoundError(
            f"{model_dir}: no version folder with {model_file} (expected "
            f"{model_dir}/<N>/{model_file}; export one with `vision export`)"
        )
    return str(versions[-1])


def _model_file(model_dir: Path) -> str:
    """The config's model file name, without failing on a folder that has no config yet."""
    if (model_dir / "config.yaml").is_file():
        return load_config(model_dir).model_file
    return DEFAULT_MODEL_FILE


def resolve_version(model_dir: str | Path, version: str | int | None, model_file: str) -> str:
    """`version` as a string ("", None and 0 mean the latest); ModelNotFoundError when the folder
    lacks the model file, naming the versions there are."""
    if version in (None, "", 0, "0"):
        return latest_version(model_dir, model_file)
    version = str(version)
    if not (Path(model_dir) / version / model_file).is_file():
        found = ", ".join(map(str, version_numbers(model_dir, model_file))) or "none"
        raise ModelNotFoundError(
            f"{model_dir}: version {version} has no {model_file}; versions: {found}"
        )
    return version


@dataclass
class LoadedModel:
    """One model version in memory: config, ONNX session, pipeline and optional explainer."""

    config: ModelConfig
    session: OnnxModel
    pipeline: Pipeline
    version: str = ""
    folder: Path | None = None
    explainer: Explainer | None = None

    @property
    def name(self) -> str:
        """The model's name (its config's)."""
        return self.config.name

    @property
    def input_name(self) -> str:
        """The graph's (single) image input."""
        return self.session.inputs[0].name

    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime providers the session runs on, in order."""
        return self.session.providers

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch of preprocessed inputs; outputs by name, batch first."""
        return self.session.run({self.input_name: np.ascontiguousarray(batch)})

    def run_items(self, tensors: Sequence[np.ndarray], batch: int = 0) -> list[dict]:
        """Per-item outputs of preprocessed items, run `batch` at a time (0: the config's max)."""
        size = batch or max(1, self.config.batching.max_batch_size)
        outputs: list[dict] = []
        for i in range(0, len(tensors), size):
            chunk = np.stack(tensors[i : i + size])
            result = self.run(chunk)
            outputs += [{k: v[j] for k, v in result.items()} for j in range(len(chunk))]
        return outputs

    def preprocess(self, image: Image | bytes) -> tuple[np.ndarray, PreprocessMeta]:
        """Decode (bytes) and preprocess one image as the server does."""
        return self.pipeline.preprocess(self.decode(image))

    def decode(self, image: Image | bytes) -> Image:
        """An `Image` as is, or bytes decoded by the server's decoder with the config's window."""
        if isinstance(image, Image):
            return image
        from vision.io import decode_image

        return decode_image(image, dicom_window=self.config.preprocess.dicom_window)

    def predict(self, image: Image | bytes) -> Result:
        """Decode -> preprocess -> run -> postprocess, one image, original-image coordinates."""
        return self.predict_many([image])[0]

    def predict_many(self, images: Sequence[Image | bytes], batch: int = 0) -> list[Result]:
        """`predict` for several images, batched through the session."""
        pairs = [self.preprocess(image) for image in images]
        outputs = self.run_items([t for t, _ in pairs], batch)
        return [self.pipeline.postprocess(o, m) for o, (_, m) in zip(outputs, pairs, strict=True)]

    def with_postprocess(self, **changes: object) -> LoadedModel:
        """The same session with a pipeline whose postprocess settings differ (say, a low
        score threshold for AP)."""
        post = dataclasses.replace(self.config.postprocess, **changes)
        config = dataclasses.replace(self.config, postprocess=post)
        return dataclasses.replace(self, config=config, pipeline=Pipeline(config))


def open_model(
    config: ModelConfig,
    model_file: str | Path,
    runtime: RuntimeSpec | None = None,
    explain_file: str | Path | None = None,
    version: str = "",
) -> LoadedModel:
    """A `LoadedModel` over one ONNX file and a config (no repository folder needed: export
    gates score a file before it is written). The config's named outputs must exist."""
    runtime = runtime or config.runtime
    session = OnnxModel(model_file, runtime)
    check_named_outputs(config, session, version)
    explainer = None
    if explain_file is not None:
        explainer = open_explainer(config, explain_file, session, runtime)
    folder = Path(model_file).parent
    return LoadedModel(config, session, Pipeline(config), version, folder, explainer)


def open_explainer(
    config: ModelConfig, explain_file: str | Path, session: OnnxModel, runtime: RuntimeSpec
) -> Explainer:
    """The `Explainer` over an explain graph, checked against the plain model's `session`
    (for a segmenter: can one run give masks and heat maps? for a detector: does its split
    graph serve every path, so that the whole graph's session can go?)."""
    explainer = Explainer(config, OnnxModel(explain_file, runtime), plain=session)
    if config.task == "segmentation":
        explainer.check_outputs(session)
    return explainer


def explain_file_of(model: LoadedModel) -> Path | None:
    """The explain graph the config names for a loaded version, or None when it names none;
    ModelNotFoundError when it is named but missing."""
    if model.folder is None:
        return None
    return _explain_file(model.config, model.folder, None)


def load_model(
    model_dir: str | Path,
    version: str | int | None = None,
    providers: Sequence[str] | None = None,
    explain: bool | None = None,
    threads: int | None = None,
    runtime: RuntimeSpec | None = None,
    config: ModelConfig | None = None,
) -> LoadedModel:
    """Load a model version from its folder.

    `version`: None/""/0 = the latest. `providers` / `threads`: override the config's runtime
    (say, ("cpu",)). `explain`: True needs the explain graph, False skips it, None loads it when
    the config names one. `config`: an already read config of `model_dir`.
    """
    model_dir = Path(model_dir)
    config = config or load_config(model_dir)
    version = resolve_version(model_dir, version, config.model_file)
    folder = model_dir / version
    return open_model(
        config,
        folder / config.model_file,
        _runtime(runtime or config.runtime, providers, threads),
        _explain_file(config, folder, explain),
        version,
    )


def _runtime(base: RuntimeSpec, providers: Sequence[str] | None, threads: int | None):
    changes: dict[str, object] = {}
    if providers:
        changes["providers"] = tuple(providers)
    if threads:
        changes |= {"intra_op_threads": threads, "inter_op_threads": 1}
    return dataclasses.replace(base, **changes) if changes else base


def _explain_file(config: ModelConfig, folder: Path, explain: bool | None) -> Path | None:
    """The version's explain graph to load, or None; errors say what to run."""
    if explain is False or (explain is None and not config.explain.file):
        return None
    if not config.explain.file:
        raise ConfigError(
            f"model {config.name!r} has no explain graph; run `vision explain-export --model "
            f"{config.name} --checkpoint runs/<recipe>/best.pt` first"
        )
    path = folder / config.explain.file
    if not path.is_file():
        raise ModelNotFoundError(
            f"explain graph {path.name} named in the config is missing from {folder}; rerun "
            f"`vision explain-export --model {config.name}`"
        )
    return path


def check_named_outputs(config: ModelConfig, session: OnnxModel, version: str = "") -> None:
    """ConfigError when the config names an output the ONNX file does not have."""
    post = config.postprocess
    where = f"version {version}: " if version else ""
    for key, name in (("output", post.output), ("image_score_output", post.image_score_output)):
        if name and name not in session.output_names:
            raise ConfigError(
                f"{where}postprocess.{key} {name!r} is not an output of "
                f"{Path(session.path).name} {session.output_names}"
            )
