"""Review tool settings: the data dir, session timeouts, and which results become cases.

The capture policy is a YAML file (`vision serve --review-config FILE`)::

    session: {idle_s: 1800, absolute_s: 43200}
    capture:
      default: off                  # results of other callers (gRPC / REST: source "api")
      sources: {dicom: all, line: "sample:0.01"}
      models:
        pcb-defects: failed         # every source of this model
        chest-xray: {dicom: all, line: off}

Modes: `all`, `failed` (the model's inspection rules fail the image; without rules, any
finding), `sample:P` (a random share P in (0, 1]), `off`. The most specific entry wins: model
and source, model, source, default. Without a `default`, sources not listed keep the built-in
modes: DICOM results are captured, camera lines and other callers are not (a line runs at frame
rate); a `default` applies to every source not listed. Uploads in the tool are always cases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vision.errors import ConfigError

DEFAULT_SOURCES = {"dicom": "all", "line": "off", "api": "off"}


@dataclass(frozen=True)
class CaptureMode:
    """One capture mode: all, failed, sample (with its share) or off."""

    kind: str
    share: float = 1.0

    @classmethod
    def parse(cls, text: Any, where: str) -> CaptureMode:
        """`all` | `failed` | `sample:P` | `off` (YAML's bare off/false count as off)."""
        if text is False or text == "off":
            return cls("off", 0.0)
        if text in ("all", "failed"):
            return cls(str(text))
        if isinstance(text, str) and text.startswith("sample:"):
            try:
                share = float(text.removeprefix("sample:"))
            except ValueError:
                share = -1.0
            if 0 < share <= 1:
                return cls("sample", share)
        raise ConfigError(f"{where}: write all, failed, sample:P (0 < P <= 1) or off, not {text!r}")

    def wants(self, failed: bool, rng: random.Random) -> bool:
        """Whether a result is captured under this mode."""
        if self.kind == "all":
            return True
        if self.kind == "failed":
            return failed
        if self.kind == "sample":
            return rng.random() < self.share
        return False


@dataclass(frozen=True)
class CapturePolicy:
    """Which results become cases, per model and source."""

    default: CaptureMode = CaptureMode("off", 0.0)
    sources: dict[str, CaptureMode] = field(default_factory=dict)
    models: dict[str, dict[str, CaptureMode]] = field(default_factory=dict)  # "" = any source

    def mode(self, model: str, source: str) -> CaptureMode:
        """The mode for a model's result from a source (most specific entry wins)."""
        per_model = self.models.get(model, {})
        for found in (per_model.get(source), per_model.get(""), self.sources.get(source)):
            if found is not None:
                return found
        return self.default

    @classmethod
    def parse(cls, data: dict[str, Any] | None) -> CapturePolicy:
        """The `capture` section; without a `default`, unlisted sources keep DEFAULT_SOURCES."""
        data = dict(data or {})
        unknown = sorted(set(data) - {"default", "sources", "models"})
        if unknown:
            raise ConfigError(f"capture: unknown key(s) {unknown}; known: default, sources, models")
        base = {} if "default" in data else DEFAULT_SOURCES  # a default replaces the built-ins
        given = {**base, **(data.get("sources") or {})}
        sources = {k: CaptureMode.parse(v, f"capture.sources.{k}") for k, v in given.items()}
        models: dict[str, dict[str, CaptureMode]] = {}
        for name, entry in (data.get("models") or {}).items():
            where = f"capture.models.{name}"
            if isinstance(entry, dict):
                models[name] = {k: CaptureMode.parse(v, f"{where}.{k}") for k, v in entry.items()}
            else:
                models[name] = {"": CaptureMode.parse(entry, where)}
        return cls(
            CaptureMode.parse(data.get("default", "off"), "capture.default"), sources, models
        )


@dataclass(frozen=True)
class ReviewSettings:
    """Where the review data lives, session timeouts and the capture policy."""

    data_dir: Path
    idle_s: float = 1800.0
    absolute_s: float = 43200.0
    capture: CapturePolicy = field(default_factory=lambda: CapturePolicy.parse(None))
    queue_size: int = 256
    # The PACS's DICOMweb root (e.g. Orthanc's http://127.0.0.1:8042/dicom-web): OHIF at
    # /review/ohif/ reads it through the proxy at /review/dicom-web/ (review/ohif.py).
    dicomweb_url: str | None = None

    @property
    def database(self) -> Path:
        """The SQLite file."""
        return self.data_dir / "review.sqlite"


def load_settings(data_dir: Path, config: Path | None = None) -> ReviewSettings:
    """Settings for `data_dir`, from the YAML file `config` when given."""
    data: dict[str, Any] = {}
    if config is not None:
        data = yaml.safe_load(Path(config).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{config}: a mapping with session and capture sections")
    unknown = sorted(set(data) - {"session", "capture"})
    if unknown:
        raise ConfigError(f"{config}: unknown key(s) {unknown}; known: session, capture")
    session = data.get("session") or {}
    return ReviewSettings(
        data_dir=Path(data_dir),
        idle_s=float(session.get("idle_s", 1800.0)),
        absolute_s=float(session.get("absolute_s", 43200.0)),
        capture=CapturePolicy.parse(data.get("capture")),
    )
