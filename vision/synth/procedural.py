"""Procedural defects (DRAEM-style): Perlin-noise blobs and crack-like strokes with exact masks.

A defect's shape is drawn first (a thresholded Perlin-noise blob under an elliptic window, or a
random-walk polyline with jittered width), then filled with texture cut from another image of
the same domain, shifted to the local grey level plus a (signed) contrast and blended with an
opacity. Only the mask's pixels change, so the returned mask is exactly the defect.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vision.synth.copy_paste import Placed, find_placement, tight_box
from vision.synth.distribution import ClassFit, Draw, grey, largest_component, ring


@dataclass
class ProceduralConfig:
    """Procedural settings; area, aspect and contrast ranges apply when no fit is given."""

    kind: str = "auto"  # perlin | crack | auto (crack for classes named *crack*)
    area: tuple[float, float] = (150.0, 1500.0)  # pixels
    aspect: tuple[float, float] = (0.5, 2.0)  # bbox width / height
    contrast: tuple[float, float] = (-60.0, -20.0)  # grey levels against the local background
    width: tuple[float, float] = (1.5, 4.0)  # crack stroke width, pixels
    opacity: tuple[float, float] = (0.75, 1.0)
    guard: int = 2  # pixels kept free between defects and existing instances
    tries: int = 60


def perlin(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise, about -1..1, with `res` lattice cells along (y, x)."""
    h, w = shape
    angles = rng.uniform(0, 2 * np.pi, (res[0] + 1, res[1] + 1))
    gy, gx = np.sin(angles), np.cos(angles)
    ys, xs = np.linspace(0, res[0], h, endpoint=False), np.linspace(0, res[1], w, endpoint=False)
    yi, xi = ys.astype(int), xs.astype(int)
    yf, xf = (ys - yi)[:, None], (xs - xi)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        iy, ix = (yi + dy)[:, None], (xi + dx)[None, :]
        return gy[iy, ix] * (yf - dy) + gx[iy, ix] * (xf - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(xf), fade(yf)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return np.sqrt(2) * (top * (1 - v) + bottom * v)


def perlin_blob(area: float, aspect: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean blob of about `area` pixels and bbox aspect about `aspect` (w / h)."""
    bh = max(int(np.sqrt(area / aspect) * 1.6), 6)
    bw = max(int(np.sqrt(area * aspect) * 1.6), 6)
    res = (int(rng.integers(2, 5)), int(rng.integers(2, 5)))
    noise = perlin((bh, bw), res, rng) + 0.5 * perlin((bh, bw), (2 * res[0], 2 * res[1]), rng)
    yy, xx = np.mgrid[0:bh, 0:bw]
    window = 1 - (((yy + 0.5) / bh * 2 - 1) ** 2 + ((xx + 0.5) / bw * 2 - 1) ** 2)
    score = (noise + 2.0) * np.clip(window, 0, None)
    inside = score > 0
    keep = min(area / max(inside.sum(), 1), 1.0)
    blob = inside & (score >= np.quantile(score[inside], 1 - keep))
    return largest_component(blob)


def crack_mask(length: float, width: float, rng: np.random.Generator) -> np.ndarray:
    """A random-walk polyline of about `length` pixels, each segment's width jittered."""
    step = 4.0
    steps = max(int(length / step), 3)
    theta = rng.uniform(0, 2 * np.pi)
    points = [np.zeros(2)]
    for _ in range(steps):
        theta += rng.normal(0, 0.35)
        points.append(points[-1] + step * np.array([np.cos(theta), np.sin(theta)]))
    pts = np.array(points)
    margin = int(np.ceil(width * 1.5)) + 2
    pts = np.round(pts - pts.min(0) + margin).astype(np.int32)
    canvas = np.zeros((int(pts[:, 1].max()) + margin + 1, int(pts[:, 0].max()) + margin + 1))
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        thick = max(1, int(round(width * rng.uniform(0.6, 1.4))))
        cv2.line(canvas, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1.0, thick, cv2.LINE_8)
    return canvas > 0


def _draw(cfg: ProceduralConfig, rng: np.random.Generator, fit: ClassFit | None) -> Draw:
    if fit is not None:
        return fit.sample(rng)
    area = float(np.exp(rng.uniform(*np.log(cfg.area))))
    aspect = float(np.exp(rng.uniform(*np.log(cfg.aspect))))
    return Draw(area, aspect, float(rng.uniform(*cfg.contrast)), (0.5, 0.5))


def _shape(kind: str, draw: Draw, cfg: ProceduralConfig, rng: np.random.Generator) -> tuple:
    area = float(np.clip(draw.area, 20, 40000))
    if kind == "crack":
        width = float(rng.uniform(*cfg.width))
        length = float(np.clip(area / width, 12, 600))
        return crack_mask(length, width, rng), {"length": round(length, 1), "width": width}
    aspect = float(np.clip(draw.aspect, 0.2, 5.0))
    return perlin_blob(area, aspect, rng), {"target_area": round(area, 1), "aspect": aspect}


def texture_patch(texture: np.ndarray, h: int, w: int, rng: np.random.Generator) -> tuple:
    """A random hxw grey patch of `texture` (resized up when it is too small) and its origin."""
    g = grey(texture)
    if g.shape[0] < h or g.shape[1] < w:
        f = max(h / g.shape[0], w / g.shape[1]) * 1.01
        g = cv2.resize(g, (int(np.ceil(g.shape[1] * f)), int(np.ceil(g.shape[0] * f))))
    ty = int(rng.integers(0, g.shape[0] - h + 1))
    tx = int(rng.integers(0, g.shape[1] - w + 1))
    return g[ty : ty + h, tx : tx + w], (ty, tx)


def fill(
    image: np.ndarray,
    mask: np.ndarray,
    y: int,
    x: int,
    texture: np.ndarray,
    contrast: float,
    opacity: float,
) -> None:
    """Fill the window mask at (y, x) of `image` (HxWxC uint8, in place) with texture detail at
    the local level + contrast; pixels outside the mask are untouched."""
    h, w = mask.shape
    region = image[y : y + h, x : x + w].astype(np.float32)
    band = ring(mask, 3)
    local = grey(image[y : y + h, x : x + w])
    level = float(local[band].mean()) if band.any() else float(local.mean())
    detail = texture - float(texture[mask].mean())
    value = np.clip(level + contrast + detail, 0, 255)[..., None]
    blended = region * (1 - opacity) + value * opacity
    region[mask] = blended[mask]
    image[y : y + h, x : x + w] = region.round().clip(0, 255).astype(np.uint8)


def add_defect(
    image: np.ndarray,
    occupied: np.ndarray,
    allowed: np.ndarray | None,
    class_name: str,
    texture: tuple[str, np.ndarray],
    cfg: ProceduralConfig,
    rng: np.random.Generator,
    fit: ClassFit | None = None,
) -> Placed | None:
    """Draw one procedural defect into `image` (in place); texture = (source path, pixels)."""
    kind = cfg.kind
    if kind == "auto":
        kind = "crack" if "crack" in class_name.lower() else "perlin"
    draw = _draw(cfg, rng, fit)
    mask, shape_params = _shape(kind, draw, cfg, rng)
    if mask.sum() < 4:
        return None
    kernel = np.ones((2 * cfg.guard + 1, 2 * cfg.guard + 1), np.uint8)
    foot = cv2.dilate(np.pad(mask, cfg.guard).astype(np.uint8), kernel).astype(bool)
    mask = np.pad(mask, cfg.guard)
    spot = find_placement(occupied, allowed, foot, rng, draw.centre if fit else None, cfg.tries)
    if spot is None:
        return None
    y, x = spot
    tex, origin = texture_patch(texture[1], *mask.shape, rng)
    opacity = float(rng.uniform(*cfg.opacity))
    fill(image, mask, y, x, tex, draw.contrast, opacity)
    full = np.zeros(occupied.shape, bool)
    full[y : y + mask.shape[0], x : x + mask.shape[1]] = mask
    occupied[y : y + foot.shape[0], x : x + foot.shape[1]] |= foot
    params = {"kind": kind, **shape_params, "contrast": round(draw.contrast, 2)}
    params.update(opacity=round(opacity, 3), x=x, y=y, area=int(mask.sum()))
    source = {"path": texture[0], "instance": None, "role": "texture", "patch": list(origin)}
    return Placed(class_name, full, tight_box(full), params, [source])
