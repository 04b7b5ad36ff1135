"""Fit a rare class's size, aspect, contrast and location from its real instances; sample them.

Area and aspect (bbox width / height) are log-normal; contrast (mean grey inside the instance
minus the mean of a ring around it) is normal; centres (normalised to 0..1) come from a Gaussian
KDE over the real centres (Scott's bandwidth). The fit is saved as JSON beside the output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

MIN_SIGMA = 0.15  # spread used when a class has too few instances to estimate one


@dataclass
class Draw:
    """One sampled instance shape: area (px), aspect (w/h), contrast (grey levels), centre."""

    area: float
    aspect: float
    contrast: float
    centre: tuple[float, float]  # (cx, cy), fractions of width and height


@dataclass
class ClassFit:
    """The fitted statistics of one class."""

    name: str
    count: int
    log_area: tuple[float, float]
    log_aspect: tuple[float, float]
    contrast: tuple[float, float]
    centres: list[tuple[float, float]]
    bandwidth: float

    def sample(self, rng: np.random.Generator) -> Draw:
        """Draw an area, aspect, contrast and centre from the fit."""
        area = float(np.exp(rng.normal(*self.log_area)))
        aspect = float(np.exp(rng.normal(*self.log_aspect)))
        contrast = float(rng.normal(*self.contrast))
        cx, cy = self.centres[int(rng.integers(len(self.centres)))]
        jitter = rng.normal(0.0, self.bandwidth, 2)
        centre = (float(np.clip(cx + jitter[0], 0, 1)), float(np.clip(cy + jitter[1], 0, 1)))
        return Draw(area, aspect, contrast, centre)

    def to_dict(self) -> dict:
        """The fit as a plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClassFit:
        """The ClassFit of a `to_dict` dict (lists back to tuples)."""
        data = dict(data)
        for key in ("log_area", "log_aspect", "contrast"):
            data[key] = tuple(data[key])
        data["centres"] = [tuple(c) for c in data["centres"]]
        return cls(**data)


def grey(image: np.ndarray) -> np.ndarray:
    """HxW float32 grey levels of an HxW / HxWxC uint8 image."""
    if image.ndim == 2:
        return image.astype(np.float32)
    if image.shape[2] == 1:
        return image[..., 0].astype(np.float32)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY).astype(np.float32)


def ring(mask: np.ndarray, width: int = 5) -> np.ndarray:
    """The band of `width` pixels just outside a boolean mask."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask, holes filled."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count < 2:
        return np.zeros_like(mask, bool)
    keep = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    contours, _ = cv2.findContours(keep, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(keep, contours, -1, 1, cv2.FILLED)
    return keep.astype(bool)


def local_contrast(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean grey inside the mask minus the ring's mean, the ring's mean)."""
    g = grey(image)
    band = ring(mask)
    outside = float(g[band].mean()) if band.any() else float(g.mean())
    return float(g[mask].mean()) - outside, outside


def instance_stats(image: np.ndarray, mask: np.ndarray) -> dict:
    """Area, aspect, contrast, ring (background) level and normalised centre of an instance."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    contrast, background = local_contrast(image, mask)
    return {
        "area": float(mask.sum()),
        "aspect": float(bw / bh),
        "contrast": contrast,
        "background": background,
        "cx": float((xs.min() + xs.max() + 1) / 2 / w),
        "cy": float((ys.min() + ys.max() + 1) / 2 / h),
    }


def _normal(values: np.ndarray, floor: float) -> tuple[float, float]:
    sigma = float(values.std(ddof=1)) if values.size > 2 else floor
    return float(values.mean()), max(sigma, floor)


def fit_class(name: str, stats: list[dict]) -> ClassFit:
    """Fit one class from `instance_stats` records (at least one)."""
    if not stats:
        raise ValueError(f"no real instances of {name!r} to fit")
    area = np.log([s["area"] for s in stats])
    aspect = np.log([s["aspect"] for s in stats])
    contrast = np.array([s["contrast"] for s in stats])
    centres = np.array([[s["cx"], s["cy"]] for s in stats])
    scott = len(stats) ** (-1 / 6) * float(centres.std(0).mean()) if len(stats) > 1 else 0.1
    return ClassFit(
        name=name,
        count=len(stats),
        log_area=_normal(area, MIN_SIGMA),
        log_aspect=_normal(aspect, MIN_SIGMA),
        contrast=_normal(contrast, 2.0),
        centres=[(round(float(x), 4), round(float(y), 4)) for x, y in centres],
        bandwidth=max(scott, 0.02),
    )


def save_fits(path: Path, fits: dict[str, ClassFit]) -> Path:
    """Write the fits of all classes as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: v.to_dict() for k, v in fits.items()}, indent=1) + "\n")
    return path


def load_fits(path: Path) -> dict[str, ClassFit]:
    """Read fits written by `save_fits`."""
    return {k: ClassFit.from_dict(v) for k, v in json.loads(Path(path).read_text()).items()}
