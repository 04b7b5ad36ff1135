"""Copy-paste: cut real instances (by mask, or by box + foreground estimate) and paste them.

Labels are exact: an instance's label is the pasted alpha > 0.5 region in the output image. Its
box is that region's tight bounding box, or, for an instance cut from an annotated box, that box
around it as the dataset draws it (`annotated_box`). Pixels change only inside the instance's guard
band (alpha > 0 for alpha blending, the label dilated by `guard` pixels for Poisson blending),
and the guard band never touches an existing instance (for boxes: nor their rectangles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from vision.synth.distribution import ClassFit, grey, instance_stats, largest_component, ring

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 pixel edges: columns x1 .. x2 - 1


@dataclass
class Instance:
    """A real instance cut from its image: patch (hxwxC uint8), alpha (hxw 0..1), origin."""

    class_name: str
    patch: np.ndarray
    alpha: np.ndarray
    source: str
    index: int
    stats: dict = field(default_factory=dict)
    box_size: tuple[float, float] | None = None  # its annotated box (w, h), when cut from one


@dataclass
class Placed:
    """An instance in a synthetic image: exact HxW label mask, its label box (`annotated_box`),
    how it was made."""

    class_name: str
    mask: np.ndarray
    box: Box
    params: dict
    sources: list[dict]


@dataclass
class PasteConfig:
    """Copy-paste settings; the ranges apply when no distribution fit is given."""

    blend: str = "poisson"  # poisson | alpha
    scale: tuple[float, float] = (0.7, 1.4)
    rotate: float = 180.0  # maximum absolute rotation, degrees
    right_angles: bool = False  # rotate by 0/90/180/270 only (for axis-aligned layouts)
    flip: bool = True
    gain: tuple[float, float] = (0.8, 1.25)  # contrast multiplier (with a fit: its clip range)
    match_background: bool = True  # shift the patch to the destination's local grey level
    guard: int = 3
    tries: int = 60
    min_visible: float = 0.0  # fraction of label pixels that must change by >= 48 grey levels
    min_context: float = 0.0  # binary images: fraction of the 4-px ring matching the source's
    boxes: bool = False  # detection: existing/pasted boxes block their whole rectangle
    binary: bool = False  # binarise the transformed patch and alpha (DeepPCB)


def tight_box(mask: np.ndarray) -> Box:
    """The tight bounding box (pixel edges) of a non-empty boolean mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _as3(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 3 else image[..., None]


def _crop(image: np.ndarray, mask: np.ndarray, box: Box, margin: int) -> tuple:
    h, w = mask.shape
    x1, y1 = max(box[0] - margin, 0), max(box[1] - margin, 0)
    x2, y2 = min(box[2] + margin, w), min(box[3] + margin, h)
    return _as3(image)[y1:y2, x1:x2].copy(), mask[y1:y2, x1:x2].astype(np.float32)


def from_mask(
    image: np.ndarray, mask: np.ndarray, class_name: str, source: str, margin: int = 8
) -> list[Instance]:
    """One instance per 8-connected component (>= 4 px) of a boolean mask, in label order."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    out = []
    for i in range(1, count):
        if stats[i, cv2.CC_STAT_AREA] < 4:
            continue
        comp = labels == i
        patch, alpha = _crop(image, comp, tight_box(comp), margin)
        out.append(Instance(class_name, patch, alpha, source, i - 1, instance_stats(image, comp)))
    return out


def _otsu(crop: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Otsu inside the box; the side that owns less of the box border is the foreground."""
    g = grey(crop).astype(np.uint8)
    _, th = cv2.threshold(g[inner], 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = np.zeros(g.shape, bool)
    fg[inner] = th.ravel() > 0
    ys, xs = np.nonzero(inner)
    edge = (ys == ys.min()) | (ys == ys.max()) | (xs == xs.min()) | (xs == xs.max())
    if fg[ys[edge], xs[edge]].mean() > 0.5:
        fg = inner & ~fg
    return fg


def _grabcut(crop: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    rgb = np.repeat(crop, 3, 2) if crop.shape[2] == 1 else crop
    gc = np.zeros(crop.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(rgb), gc, rect, bgd, fgd, 3, cv2.GC_INIT_WITH_RECT)
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def box_foreground(
    image: np.ndarray, box: Box, method: str = "grabcut", template: np.ndarray | None = None
) -> np.ndarray:
    """HxW foreground estimate inside a box: grabcut | otsu | template (|image - template|);
    the largest component, holes filled; an inscribed ellipse when nothing is found."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
    inner = np.zeros((h, w), bool)
    inner[y1:y2, x1:x2] = True
    fg = np.zeros((h, w), bool)
    if method == "template" and template is not None:
        fg = inner & (np.abs(grey(image) - grey(template)) > 64)
    elif method == "grabcut":
        m = 8
        cx1, cy1, cx2, cy2 = max(x1 - m, 0), max(y1 - m, 0), min(x2 + m, w), min(y2 + m, h)
        rect = (x1 - cx1, y1 - cy1, x2 - x1, y2 - y1)
        try:
            fg[cy1:cy2, cx1:cx2] = _grabcut(_as3(image)[cy1:cy2, cx1:cx2], rect)
        except cv2.error:
            fg = _otsu(_as3(image), inner)
        fg &= inner
    if method == "otsu" or fg.sum() < 4:
        fg = _otsu(_as3(image), inner)
    fg = largest_component(fg) & inner
    if fg.sum() < 4:
        ellipse = np.zeros((h, w), np.uint8)
        centre = ((x1 + x2 - 1) // 2, (y1 + y2 - 1) // 2)
        axes = (max((x2 - x1) // 2, 1), max((y2 - y1) // 2, 1))
        cv2.ellipse(ellipse, centre, axes, 0, 0, 360, 1, cv2.FILLED)
        fg = ellipse.astype(bool) & inner
    return fg


def from_box(
    image: np.ndarray,
    box: Box,
    class_name: str,
    source: str,
    index: int,
    method: str = "grabcut",
    template: np.ndarray | None = None,
) -> Instance:
    """An instance cut from a labelled box with a foreground estimate (see `box_foreground`)."""
    fg = box_foreground(image, box, method, template)
    patch, alpha = _crop(image, fg, tight_box(fg), 8)
    size = (float(box[2] - box[0]), float(box[3] - box[1]))
    return Instance(class_name, patch, alpha, source, index, instance_stats(image, fg), size)


def transform(
    patch: np.ndarray, alpha: np.ndarray, scale: float, angle: float, flip: bool, stretch: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scale (x by sqrt(stretch), y by 1/sqrt(stretch)), flip, rotate onto a fitting canvas."""
    h, w = alpha.shape
    if flip:
        patch, alpha = patch[:, ::-1], alpha[:, ::-1]
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    lin = rot @ np.diag([scale * np.sqrt(stretch), scale / np.sqrt(stretch)])
    corners = lin @ np.array([[0, w, 0, w], [0, 0, h, h]], float)
    lo, hi = corners.min(1), corners.max(1)
    size = (int(np.ceil(hi[0] - lo[0])) + 1, int(np.ceil(hi[1] - lo[1])) + 1)
    matrix = np.hstack([lin, -lo[:, None]]).astype(np.float32)
    warped = cv2.warpAffine(
        np.ascontiguousarray(patch),
        matrix,
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    soft = cv2.warpAffine(np.ascontiguousarray(alpha), matrix, size, flags=cv2.INTER_LINEAR)
    return _as3(warped), soft


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def footprint(label: np.ndarray, alpha: np.ndarray, blend: str, guard: int) -> np.ndarray:
    """The pixels that may change: alpha > 0 (alpha blending) or the label dilated (Poisson)."""
    if blend == "alpha":
        return alpha > 0
    return cv2.dilate(label.astype(np.uint8), _disk(guard)).astype(bool)


def find_placement(
    occupied: np.ndarray,
    allowed: np.ndarray | None,
    foot: np.ndarray,
    rng: np.random.Generator,
    hint: tuple[float, float] | None = None,
    tries: int = 60,
    inset: int = 1,
    accept: Callable[[int, int], bool] | None = None,
) -> tuple[int, int] | None:
    """Top-left (y, x) where `foot` lies inside the image (`inset` px from the edge), touches
    nothing occupied, stays inside `allowed` and passes `accept`; early tries near `hint`."""
    big_h, big_w = occupied.shape
    h, w = foot.shape
    ymax, xmax = big_h - h - inset, big_w - w - inset
    if ymax < inset or xmax < inset:
        return None
    for attempt in range(tries):
        if hint is not None and attempt < tries // 2:
            spread = 0.05 * (1 + attempt)
            y = int(round((hint[1] + rng.normal(0, spread)) * big_h - h / 2))
            x = int(round((hint[0] + rng.normal(0, spread)) * big_w - w / 2))
            y, x = min(max(y, inset), ymax), min(max(x, inset), xmax)
        else:
            y, x = int(rng.integers(inset, ymax + 1)), int(rng.integers(inset, xmax + 1))
        if (occupied[y : y + h, x : x + w] & foot).any():
            continue
        if allowed is not None and not allowed[y : y + h, x : x + w][foot].all():
            continue
        if accept is None or accept(y, x):
            return y, x
    return None


def blend_into(
    image: np.ndarray,
    patch: np.ndarray,
    alpha: np.ndarray,
    foot: np.ndarray,
    y: int,
    x: int,
    blend: str,
) -> None:
    """Blend the patch into `image` (HxWxC uint8, in place) at top-left (y, x): alpha
    compositing, or Poisson blending inside `foot`."""
    h, w = alpha.shape
    region = image[y : y + h, x : x + w].astype(np.float32)
    if blend == "alpha":
        a = alpha[..., None]
        image[y : y + h, x : x + w] = np.clip(region * (1 - a) + patch * a, 0, 255).round()
        return
    image[y : y + h, x : x + w] = poisson_blend(region, patch, foot)


def poisson_blend(dst: np.ndarray, src: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson image editing on an hxwxC region: inside `mask` the result has src's gradients
    and meets dst on the mask's boundary; outside it is dst, untouched."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    mask = np.pad(mask, 1)  # the solve needs a boundary ring around every unknown
    s = np.pad(src.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    d = np.pad(dst.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    ys, xs = np.nonzero(mask)
    n = len(ys)
    index = np.full(mask.shape, -1, np.int64)
    index[ys, xs] = np.arange(n)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
    rhs = 4 * s[ys, xs]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        rhs -= s[ny, nx]
        inside = mask[ny, nx]
        rows.append(np.flatnonzero(inside))
        cols.append(index[ny[inside], nx[inside]])
        vals.append(-np.ones(int(inside.sum())))
        rhs[~inside] += d[ny[~inside], nx[~inside]]
    matrix = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))))
    out = d.copy()
    out[ys, xs] = splu(matrix.tocsc()).solve(rhs)
    return np.clip(out[1:-1, 1:-1], 0, 255).round().astype(np.uint8)


def _params(inst: Instance, cfg: PasteConfig, rng: np.random.Generator, fit: ClassFit | None):
    """Transform and intensity parameters: from the fit when given, else from cfg's ranges."""
    stats = inst.stats
    if fit is not None:
        draw = fit.sample(rng)
        scale = float(np.clip(np.sqrt(draw.area / max(stats["area"], 1.0)), 0.5, 2.0))
        stretch = float(np.clip(draw.aspect / max(stats["aspect"], 1e-3), 0.8, 1.25))
        own = stats["contrast"]
        gain = float(np.clip(draw.contrast / own, *cfg.gain)) if abs(own) > 2 else 1.0
        hint: tuple[float, float] | None = draw.centre
    else:
        scale, stretch = float(rng.uniform(*cfg.scale)), 1.0
        gain, hint = float(rng.uniform(*cfg.gain)), None
    return {
        "scale": round(scale, 4),
        "stretch": round(stretch, 4),
        "angle": _angle(cfg, rng),
        "flip": bool(cfg.flip and rng.random() < 0.5),
        "gain": round(gain, 4),
    }, hint


def _angle(cfg: PasteConfig, rng: np.random.Generator) -> float:
    if cfg.right_angles:
        return float(90 * rng.integers(4))
    return round(float(rng.uniform(-cfg.rotate, cfg.rotate)), 2)


def _intensity(patch: np.ndarray, ref: float, gain: float, level: float) -> np.ndarray:
    return np.clip(level + (patch.astype(np.float32) - ref) * gain, 0, 255).round().astype(np.uint8)


def _pad(patch: np.ndarray, alpha: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Room around the instance for the guard band (patch reflected, alpha zero)."""
    patch = cv2.copyMakeBorder(patch, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    return _as3(patch), cv2.copyMakeBorder(alpha, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)


def _context_check(image: np.ndarray, patch: np.ndarray, label: np.ndarray, need: float):
    """For binary images: accept a spot when the ring around the instance matches the ring it
    had in its source (a spur stays attached to a track, a short bridges two)."""
    band = ring(label, 4)
    want = grey(patch)[band] > 127
    h, w = label.shape

    def accept(y: int, x: int) -> bool:
        have = grey(image[y : y + h, x : x + w])[band] > 127
        return float((have == want).mean()) >= need

    return accept


def _visible(before: np.ndarray, after: np.ndarray, label: np.ndarray) -> float:
    diff = np.abs(after.astype(np.int16) - before.astype(np.int16)).max(-1)
    return float((diff[label] >= 48).mean())


def paste_instance(
    image: np.ndarray,
    occupied: np.ndarray,
    allowed: np.ndarray | None,
    inst: Instance,
    cfg: PasteConfig,
    rng: np.random.Generator,
    fit: ClassFit | None = None,
) -> Placed | None:
    """Paste one instance into `image` (HxWxC uint8, in place) and mark it in `occupied`.
    None when no valid placement was found (the image is then unchanged)."""
    params, hint = _params(inst, cfg, rng, fit)
    patch, alpha = transform(
        inst.patch, inst.alpha, params["scale"], params["angle"], params["flip"], params["stretch"]
    )
    patch, alpha = _pad(patch, alpha, cfg.guard + 1)
    if cfg.binary:
        patch = np.where(patch > 127, 255, 0).astype(np.uint8)
        alpha = (alpha > 0.5).astype(np.float32)
    label = alpha > 0.5
    if label.sum() < 4:
        return None
    foot = footprint(label, alpha, cfg.blend, cfg.guard)
    block = foot.copy()
    if cfg.boxes:
        x1, y1, x2, y2 = tight_box(label)
        block[y1:y2, x1:x2] = True
    accept = _context_check(image, patch, label, cfg.min_context) if cfg.min_context else None
    spot = find_placement(occupied, allowed, block, rng, hint, cfg.tries, accept=accept)
    if spot is None:
        return None
    y, x = spot
    h, w = alpha.shape
    ref = inst.stats.get("background", float(grey(inst.patch).mean()))
    level = ref
    if cfg.match_background:
        ring_px = foot & ~label if (foot & ~label).any() else foot
        level = float(grey(image[y : y + h, x : x + w])[ring_px].mean())
    before = image[y : y + h, x : x + w].copy()
    blend_into(image, _intensity(patch, ref, params["gain"], level), alpha, foot, y, x, cfg.blend)
    if cfg.min_visible and _visible(before, image[y : y + h, x : x + w], label) < cfg.min_visible:
        image[y : y + h, x : x + w] = before
        return None
    mask = np.zeros(occupied.shape, bool)
    mask[y : y + h, x : x + w] = label
    occupied[y : y + h, x : x + w] |= block
    box = annotated_box(mask, inst.box_size, params)
    if cfg.boxes:
        occupied[box[1] : box[3], box[0] : box[2]] = True
    params.update(blend=cfg.blend, x=x, y=y)
    return Placed(
        inst.class_name, mask, box, params, [{"path": inst.source, "instance": inst.index}]
    )


def annotated_box(mask: np.ndarray, box_size: tuple[float, float] | None, params: dict) -> Box:
    """The pasted instance's label box in its dataset's convention: the mask's tight box, grown
    about its centre to the source's annotated box size after the paste's scale, stretch and
    rotation (DeepPCB boxes are about 30 px around a few-pixel defect), clipped to the image.
    Instances cut from masks (no annotated box) keep the tight box."""
    x1, y1, x2, y2 = tight_box(mask)
    if box_size is None:
        return x1, y1, x2, y2
    root = np.sqrt(params.get("stretch", 1.0))
    w, h = box_size[0] * params["scale"] * root, box_size[1] * params["scale"] / root
    t = np.deg2rad(params["angle"])
    w, h = abs(w * np.cos(t)) + abs(h * np.sin(t)), abs(w * np.sin(t)) + abs(h * np.cos(t))
    w, h = max(w, x2 - x1), max(h, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rows, cols = mask.shape
    return (
        max(int(round(cx - w / 2)), 0),
        max(int(round(cy - h / 2)), 0),
        min(int(round(cx + w / 2)), cols),
        min(int(round(cy + h / 2)), rows),
    )
