"""Provenance of synthetic images: embedded metadata (PNG tEXt / JPEG comment) plus a sidecar.

Every synthetic image records which generator made it, with which parameters, from which real
instances (dataset-relative path + instance index), with which seed and when. Evaluation code
calls `assert_no_synthetic` on its split so synthetic images can never leak into a test set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

KEY = "vision-synth-provenance"
SIDECAR_SUFFIX = ".synth.json"


class SyntheticDataError(ValueError):
    """A synthetic image was found where only real images are allowed."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Provenance:
    """Where one synthetic image came from; `sources` items are {"path": rel, "instance": i}."""

    generator: str
    params: dict
    sources: list[dict]
    seed: int
    dataset: str = ""
    created_at: str = field(default_factory=_now)

    def to_json(self) -> str:
        """Compact ASCII JSON (safe in a PNG tEXt chunk)."""
        return json.dumps(asdict(self), default=_plain, sort_keys=True, ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Provenance:
        """Parse `to_json` output, ignoring unknown keys."""
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _plain(value: object) -> object:
    """JSON fallback for numpy scalars/arrays and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sidecar_path(image: Path) -> Path:
    """The sidecar JSON of an image: `<stem>.synth.json` beside it."""
    image = Path(image)
    return image.with_name(image.stem + SIDECAR_SUFFIX)


def write_image(path: Path, pixels: np.ndarray, provenance: Provenance) -> Path:
    """Save HxW / HxWx1 / HxWx3 uint8 pixels (PNG, or JPEG by suffix) with provenance embedded
    and in the sidecar; returns the image path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(pixels, dtype=np.uint8)
    image = PILImage.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    text = provenance.to_json()
    if path.suffix.lower() == ".png":
        info = PngInfo()
        info.add_text(KEY, text)
        image.save(path, pnginfo=info)
    elif path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=95, comment=f"{KEY}={text}".encode("ascii"))
    else:
        raise ValueError(f"{path}: synthetic images are written as .png or .jpg")
    sidecar_path(path).write_text(json.dumps(json.loads(text), indent=1) + "\n")
    return path


def read_embedded(path: Path) -> Provenance | None:
    """The provenance embedded in a PNG tEXt chunk or JPEG comment, or None."""
    try:
        with PILImage.open(path) as im:
            text = getattr(im, "text", {}).get(KEY) if im.format == "PNG" else None
            comment = im.info.get("comment", b"")
    except (OSError, ValueError):
        return None
    if text is None and comment:
        raw = comment.decode("ascii", "replace") if isinstance(comment, bytes) else comment
        text = raw.removeprefix(f"{KEY}=") if raw.startswith(f"{KEY}=") else None
    return Provenance.from_json(text) if text else None


def read_sidecar(path: Path) -> Provenance | None:
    """The provenance in the image's sidecar JSON, or None."""
    side = sidecar_path(path)
    return Provenance.from_json(side.read_text()) if side.is_file() else None


def read_provenance(path: Path) -> Provenance | None:
    """Embedded provenance, else the sidecar's; None for a real image."""
    return read_embedded(Path(path)) or read_sidecar(Path(path))


def is_synthetic(path: Path) -> bool:
    """Whether the image carries synthetic provenance (embedded or sidecar)."""
    path = Path(path)
    return sidecar_path(path).is_file() or read_embedded(path) is not None


def assert_no_synthetic(paths: Iterable[Path | str], split: str = "evaluation") -> None:
    """Raise SyntheticDataError if any image of an evaluation split is synthetic."""
    bad = [str(p) for p in paths if is_synthetic(Path(p))]
    if bad:
        shown = ", ".join(bad[:5]) + (f" ... (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise SyntheticDataError(
            f"{len(bad)} synthetic image(s) in the {split} split; evaluate on real images only: "
            f"{shown}"
        )
