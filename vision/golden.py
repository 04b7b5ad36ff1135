"""Golden-template inspection: compare an image with a defect-free reference of the same part.

Steps (OpenCV, no torch): greyscale both; **register** the template onto the image (ECC,
`cv2.findTransformECC`, Euclidean or affine, on a downscaled and blurred pair; ORB features +
RANSAC when ECC fails or correlates poorly; identity as the last resort); warp the template into
the image's frame; **difference map** = |image - warped template|, Gaussian blur, threshold,
morphological opening, connected components of at least `min_area` pixels -> `Region`s in image
coordinates (the frame detections live in).

Two uses:

- an extra signal for a detector (`combine`): a detection that overlaps no difference region is
  down-weighted (`weight`, 0 drops it); optionally a region no detection covers becomes a finding
  of its own (class -1, label "difference");
- a pre-filter (`passes`): an image whose difference map has no region passes without running
  the detector.

`Registration.warp` is the 2x3 matrix W with template(W(x)) ~ image(x) for image pixel x
(OpenCV's `WARP_INVERSE_MAP` convention), so `cv2.warpAffine(template, W, size,
flags=INTER_LINEAR | WARP_INVERSE_MAP)` is the template in the image's frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from vision.types import Detection

MOTIONS = {"euclidean": cv2.MOTION_EUCLIDEAN, "affine": cv2.MOTION_AFFINE}
DIFFERENCE_LABEL = "difference"


@dataclass(frozen=True)
class GoldenSettings:
    """Registration and difference-map parameters (blur / threshold / opening are the tunables)."""

    motion: str = "euclidean"  # euclidean | affine
    ecc_scale: float = 0.5  # ECC runs on the pair downscaled by this factor
    ecc_iterations: int = 60
    ecc_eps: float = 1e-4
    ecc_blur: int = 5  # Gaussian filter size inside ECC (odd)
    min_correlation: float = 0.6  # below it, try ORB + RANSAC
    orb_features: int = 1500
    blur: int = 5  # Gaussian kernel on the difference (odd; 0 or 1 = none)
    threshold: int = 60  # grey levels (0..255) after blurring
    opening: int = 3  # square structuring element of the opening (0 or 1 = none)
    min_area: int = 12  # pixels; smaller components are dropped
    border: int = 4  # pixels at the image edge ignored (warping leaves no template there)

    def replace(self, **changes: object) -> GoldenSettings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Registration:
    """How the template maps onto the image: `warp` (2x3 float32), `method` (ecc | orb |
    identity) and its quality (`score`: ECC correlation, or the ORB inlier ratio)."""

    warp: np.ndarray
    method: str
    score: float


@dataclass(frozen=True)
class Region:
    """A connected difference component in image pixels: bounding box, area and score (mean
    blurred difference inside it, 0..1)."""

    x1: int
    y1: int
    x2: int
    y2: int
    area: int
    score: float


@dataclass
class DifferenceMap:
    """The difference of one image against its template: the blurred difference (uint8), the
    cleaned region mask (bool), its regions and the registration used."""

    difference: np.ndarray
    mask: np.ndarray
    regions: list[Region] = field(default_factory=list)
    registration: Registration | None = None


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """HxW uint8 greyscale of an HxW, HxWx1 or HxWx3 (RGB) image of any integer/float range."""
    arr = np.asarray(pixels)
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[2] == 1 else cv2.cvtColor(arr[..., :3], cv2.COLOR_RGB2GRAY)
    if arr.dtype != np.uint8:
        arr = cv2.normalize(arr.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _identity() -> np.ndarray:
    return np.eye(2, 3, dtype=np.float32)


def register_ecc(image: np.ndarray, template: np.ndarray, s: GoldenSettings) -> Registration:
    """ECC on the downscaled pair; the warp rescaled to full resolution. Raises cv2.error when
    ECC does not converge."""
    scale = s.ecc_scale
    small = [
        cv2.resize(a, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        for a in (image, template)
    ]
    warp = _identity()
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, s.ecc_iterations, s.ecc_eps)
    rho, warp = cv2.findTransformECC(
        small[0].astype(np.float32),
        small[1].astype(np.float32),
        warp,
        MOTIONS[s.motion],
        criteria,
        None,
        s.ecc_blur,
    )
    warp = warp.copy()
    warp[:, 2] /= scale
    return Registration(warp, "ecc", float(rho))


def register_orb(image: np.ndarray, template: np.ndarray, s: GoldenSettings) -> Registration | None:
    """ORB features + brute-force Hamming matching + RANSAC (partial affine for Euclidean, full
    affine otherwise); None when too few matches or no model."""
    orb = cv2.ORB_create(s.orb_features)
    kp_i, des_i = orb.detectAndCompute(image, None)
    kp_t, des_t = orb.detectAndCompute(template, None)
    if des_i is None or des_t is None or len(kp_i) < 8 or len(kp_t) < 8:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(des_i, des_t)
    if len(matches) < 8:
        return None
    src = np.float32([kp_i[m.queryIdx].pt for m in matches])  # image points
    dst = np.float32([kp_t[m.trainIdx].pt for m in matches])  # template points
    estimate = cv2.estimateAffinePartial2D if s.motion == "euclidean" else cv2.estimateAffine2D
    warp, inliers = estimate(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if warp is None:
        return None
    return Registration(warp.astype(np.float32), "orb", float(inliers.mean()))


def register(
    image: np.ndarray, template: np.ndarray, s: GoldenSettings | None = None
) -> Registration:
    """The template's registration onto the image: ECC, else ORB + RANSAC, else identity."""
    s = s or GoldenSettings()
    image, template = to_gray(image), to_gray(template)
    try:
        ecc = register_ecc(image, template, s)
        if ecc.score >= s.min_correlation:
            return ecc
    except cv2.error:
        ecc = None
    orb = register_orb(image, template, s)
    if orb is not None:
        return orb
    return ecc or Registration(_identity(), "identity", 0.0)


def warp_template(
    template: np.ndarray, registration: Registration, shape: Sequence[int]
) -> np.ndarray:
    """The template in the image's frame (size `shape[:2]`), borders replicated."""
    height, width = int(shape[0]), int(shape[1])
    return cv2.warpAffine(
        to_gray(template),
        registration.warp,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _clean(difference: np.ndarray, s: GoldenSettings) -> np.ndarray:
    """Blur -> threshold -> opening -> border cleared; uint8 0/255."""
    blurred = cv2.GaussianBlur(difference, (s.blur, s.blur), 0) if s.blur > 1 else difference
    _, mask = cv2.threshold(blurred, s.threshold, 255, cv2.THRESH_BINARY)
    if s.opening > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (s.opening, s.opening))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    if s.border > 0:
        b = s.border
        mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = 0, 0, 0, 0
    return mask


def regions_of(
    mask: np.ndarray, difference: np.ndarray, min_area: int
) -> tuple[list[Region], np.ndarray]:
    """Connected components of `mask` with at least `min_area` pixels, and the mask of those."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (mask > 0).astype(np.uint8), connectivity=8
    )
    keep = np.zeros(count, bool)
    regions = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue
        keep[i] = True
        score = float(difference[labels == i].mean()) / 255.0
        regions.append(Region(x, y, x + w, y + h, area, score))
    return regions, keep[labels]


def difference_map(
    image: np.ndarray,
    template: np.ndarray,
    settings: GoldenSettings | None = None,
    registration: Registration | None = None,
) -> DifferenceMap:
    """Register (unless `registration` is given), warp, difference and clean; regions in image
    coordinates."""
    s = settings or GoldenSettings()
    image, template = to_gray(image), to_gray(template)
    registration = registration or register(image, template, s)
    aligned = warp_template(template, registration, image.shape)
    raw = cv2.absdiff(image, aligned)
    blurred = cv2.GaussianBlur(raw, (s.blur, s.blur), 0) if s.blur > 1 else raw
    regions, mask = regions_of(_clean(raw, s), blurred, s.min_area)
    return DifferenceMap(blurred, mask, regions, registration)


def passes(dmap: DifferenceMap) -> bool:
    """The pre-filter: True (the part passes, no detector needed) when no region was found."""
    return not dmap.regions


def supported(detection: Detection, dmap: DifferenceMap, pad: int = 4) -> bool:
    """Whether the box (grown by `pad` pixels) overlaps any difference-region pixel."""
    h, w = dmap.mask.shape
    x1, y1 = max(int(detection.x1) - pad, 0), max(int(detection.y1) - pad, 0)
    x2, y2 = min(int(np.ceil(detection.x2)) + pad, w), min(int(np.ceil(detection.y2)) + pad, h)
    return bool(x2 > x1 and y2 > y1 and dmap.mask[y1:y2, x1:x2].any())


def _covered(region: Region, detections: Sequence[Detection], pad: int) -> bool:
    return any(
        d.x1 - pad < region.x2
        and region.x1 < d.x2 + pad
        and d.y1 - pad < region.y2
        and region.y1 < d.y2 + pad
        for d in detections
    )


def combine(
    detections: Sequence[Detection],
    dmap: DifferenceMap,
    weight: float = 0.25,
    pad: int = 4,
    add_regions: bool = False,
    region_weight: float = 1.0,
) -> list[Detection]:
    """Detections re-scored by the difference map: supported ones keep their score, the others
    are multiplied by `weight` (0: dropped). `add_regions`: each region no detection covers
    becomes a class -1 "difference" finding scored `region_weight * region.score`."""
    out = []
    for d in detections:
        if supported(d, dmap, pad):
            out.append(d)
        elif weight > 0:
            out.append(dataclasses.replace(d, score=d.score * weight))
    if add_regions:
        out += [
            Detection(r.x1, r.y1, r.x2, r.y2, region_weight * r.score, -1, DIFFERENCE_LABEL)
            for r in dmap.regions
            if not _covered(r, detections, pad)
        ]
    return out
