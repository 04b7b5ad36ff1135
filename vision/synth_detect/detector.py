"""Real-vs-synthetic detector: image lists, the pixel-only input, and the torch-free check.

The network sees decoded grey pixels only, never the file: format, metadata (the provenance
chunk/comment/sidecar), size and path are not inputs (provenance is read only to *label* the
training and test images and to find the pasted region to crop around). Every input, a training
crop or a whole image at check time, is re-encoded as JPEG at `CANON_QUALITY` (below the q95 of
both the real magnetic-tile JPEGs and the synthetic writer) and decoded again, so compression
history is not a usable cue; training also shows real images re-saved through the synthetic
writer's JPEG path as *real*. Crops are at native resolution (no resizing), so blending seams
keep their pixel-level detail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vision.datasets import images, segmentation
from vision.datasets.provenance import Provenance, read_provenance

CANON_QUALITY = 90
WRITER_QUALITY = 95
MEAN, STD = 0.5, 0.25
MIN_SIDE = 64
STRIDE = 32  # logit map cells (five stride-2 stages)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
Box = tuple[int, int, int, int]


@dataclass
class Item:
    """One labelled image: `group` is the generator (synthetic) or the real category."""

    path: Path
    synthetic: bool
    group: str
    boxes: list[Box] = field(default_factory=list)


def load_grey(path: Path | str) -> np.ndarray:
    """Decoded pixels as HxW uint8 grey (the server's decoder; metadata is never read)."""
    return images.load_grey(path)


def jpeg_roundtrip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Encode HxW uint8 as JPEG at `quality` and decode it again."""
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def canonical(pixels: np.ndarray, quality: int = CANON_QUALITY) -> np.ndarray:
    """The network input, float32 2xHxW: JPEG round trip, reflect-padded to at least MIN_SIDE;
    channel 0 the normalised grey, channel 1 its high-pass noise residual (grey minus its 3x3
    mean, /8), so the stride-2 net still sees full-resolution noise statistics."""
    grey = jpeg_roundtrip(pixels, quality)
    h, w = grey.shape
    grey = cv2.copyMakeBorder(
        grey, 0, max(MIN_SIDE - h, 0), 0, max(MIN_SIDE - w, 0), cv2.BORDER_REFLECT_101
    ).astype(np.float32)
    residual = (grey - cv2.blur(grey, (3, 3), borderType=cv2.BORDER_REFLECT_101)) / 8.0
    return np.stack([(grey / 255.0 - MEAN) / STD, residual])


def generator_name(prov: Provenance) -> str:
    """`copy-paste-poisson`, `copy-paste-alpha`, `procedural`; `-nofit` for fixed ranges."""
    name = prov.generator
    blends = {i.get("blend") for i in prov.params.get("instances", []) if i.get("blend")}
    if blends:
        name += "-" + "+".join(sorted(blends))
    if prov.params.get("fitted_distribution") is False:
        name += "-nofit"
    return name


def _is_image(path: Path) -> bool:
    if path.suffix.lower() not in IMAGE_SUFFIXES or path.name == "contact_sheet.png":
        return False
    if path.suffix.lower() == ".png" and path.with_suffix(".jpg").is_file():
        return False  # a magnetic-tile mask beside its image
    return not path.stem.endswith("_temp")  # DeepPCB templates (synthetic backgrounds)


def folder_items(folders: list[Path], real_group: str = "real") -> list[Item]:
    """Every image under `folders`: synthetic (with pasted boxes) if it carries provenance."""
    items = []
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and _is_image(p)):
            prov = read_provenance(path)
            if prov is None:
                mask = path.with_suffix(".png")
                boxes = mask_boxes(load_grey(mask) > 127) if mask != path and mask.is_file() else []
                items.append(Item(path, False, real_group, boxes))
                continue
            boxes = [tuple(int(v) for v in i["box"]) for i in prov.params.get("instances", [])]
            items.append(Item(path, True, generator_name(prov), boxes))
    return items


def mask_boxes(mask: np.ndarray) -> list[Box]:
    """Bounding boxes (x1, y1, x2, y2) of the mask's 8-connected components."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [(x, y, x + w, y + h) for x, y, w, h, _ in stats[1:n]]


def _read_mask(path: Path) -> np.ndarray:
    """A defect mask as HxW uint8 grey (a label: read as stored, with PIL)."""
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        return np.array(im.convert("L"))


def tile_real_items(root: Path, split: str) -> list[Item]:
    """Real magnetic-tile images of a seed-0 stratified split, boxed by their defect masks."""
    index = segmentation.tile_index(root)
    items = []
    for rel in segmentation.stratified_split(index, seed=0)[split]:
        path = Path(root) / rel
        mask_path = path.with_suffix(".png")
        boxes = mask_boxes(_read_mask(mask_path) > 127) if mask_path.is_file() else []
        items.append(Item(path, False, index[rel], boxes))
    return items


def pad_to(pixels: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad bottom and right so both sides are at least `size` (coordinates unchanged)."""
    pad_y, pad_x = max(size - pixels.shape[0], 0), max(size - pixels.shape[1], 0)
    if not (pad_y or pad_x):
        return pixels
    return cv2.copyMakeBorder(pixels, 0, pad_y, 0, pad_x, cv2.BORDER_REFLECT_101)


def crop_window(
    shape: tuple[int, int], boxes: list[Box], size: int, rng: np.random.Generator
) -> tuple[int, int]:
    """(top, left) of a size x size window inside `shape`: around a random point of a random box
    (jittered by size/4), or, when there are no boxes, anywhere with each side flush with an
    image edge a third of the time (edges are where a whole-image scan raises false alarms)."""
    h, w = shape
    if not boxes:
        return _edge_biased(h - size, rng), _edge_biased(w - size, rng)
    x1, y1, x2, y2 = boxes[int(rng.integers(len(boxes)))]
    jitter = rng.integers(-(size // 4), size // 4 + 1, 2)
    cx = int(rng.integers(x1, max(x2, x1 + 1))) + int(jitter[0])
    cy = int(rng.integers(y1, max(y2, y1 + 1))) + int(jitter[1])
    return int(np.clip(cy - size // 2, 0, h - size)), int(np.clip(cx - size // 2, 0, w - size))


def _edge_biased(span: int, rng: np.random.Generator) -> int:
    """An offset in 0..span: 0 or span a sixth of the time each, uniform otherwise."""
    u = rng.random()
    return 0 if u < 1 / 6 else span if u < 1 / 3 else int(rng.integers(0, span + 1))


def window_clear_of(
    shape: tuple[int, int], boxes: list[Box], size: int, rng: np.random.Generator, margin: int = 8
) -> tuple[int, int] | None:
    """(top, left) of a window that stays `margin` px clear of every box (None after 20 tries):
    the untouched real background of a synthetic image."""
    for _ in range(20):
        top, left = crop_window(shape, [], size, rng)
        if all(
            x2 + margin <= left
            or x1 - margin >= left + size
            or y2 + margin <= top
            or y1 - margin >= top + size
            for x1, y1, x2, y2 in boxes
        ):
            return top, left
    return None


def sample_crop(
    pixels: np.ndarray, boxes: list[Box], size: int, rng: np.random.Generator
) -> np.ndarray:
    """A size x size crop at native resolution: around a random point of a random box (jittered
    by size/4), or anywhere when there are no boxes; reflect-padded if the image is smaller."""
    pixels = pad_to(pixels, size)
    top, left = crop_window(pixels.shape, boxes, size, rng)
    return pixels[top : top + size, left : left + size]


def box_cells(boxes: list[Box], top: int, left: int, size: int) -> np.ndarray:
    """Which cells of a crop's logit map cover a box: a cell (i, j) is centred on crop pixel
    (STRIDE*i, STRIDE*j) and counts when that centre is within STRIDE/2 of a box (the nearest
    cell when none is). Boxes are in image coordinates; the crop starts at (top, left)."""
    n = -(-size // STRIDE)
    centres = np.arange(n) * STRIDE
    cells = np.zeros((n, n), bool)
    dist = np.full((n, n), np.inf)
    for x1, y1, x2, y2 in boxes:
        dx = np.maximum(np.maximum(x1 - left - centres, centres - (x2 - left)), 0)
        dy = np.maximum(np.maximum(y1 - top - centres, centres - (y2 - top)), 0)
        d = np.maximum(dy[:, None], dx[None, :])
        cells |= d <= STRIDE // 2
        dist = np.minimum(dist, d)
    if not cells.any() and boxes:
        cells.flat[int(np.argmin(dist))] = True
    return cells


def aligned_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The image's corner crops (up to four, all one shape) whose sides are multiples of STRIDE.
    Training crops are whole cells, so every edge the net saw fell on a cell boundary; scoring
    the full image would leave its bottom and right cells straddling the edge, a geometry never
    trained, where real images raised most false alarms. The views cover every pixel between
    them, and each of their edges falls on a cell boundary."""
    pixels = pad_to(pixels, STRIDE)
    h, w = pixels.shape
    tall, wide = h // STRIDE * STRIDE, w // STRIDE * STRIDE
    corners = dict.fromkeys((top, left) for top in (0, h - tall) for left in (0, w - wide))
    return [pixels[top : top + tall, left : left + wide] for top, left in corners]


class Detector:
    """The exported detector (ONNX, run by onnxruntime): P(synthetic) for whole images."""

    def __init__(self, path: Path | str, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.threshold = float(meta.get("threshold", 0.5))
        self.quality = int(meta.get("canonical_jpeg_quality", CANON_QUALITY))
        self.input_name = self.session.get_inputs()[0].name

    def probability(self, pixels: np.ndarray) -> float:
        """P(synthetic) of one HxW uint8 grey image: the max cell logit over its stride-aligned
        views (see `aligned_views`), scored as one batch."""
        x = np.stack([canonical(view, self.quality) for view in aligned_views(pixels)])
        return float(1.0 / (1.0 + np.exp(-self.max_logit(x))))

    def max_logit(self, inputs: np.ndarray) -> float:
        """The highest logit of a batch of canonical inputs (N, 2, H, W)."""
        return float(self.session.run(None, {self.input_name: inputs})[0].max())

    def check(self, paths: list[Path]) -> list[tuple[Path, float]]:
        """(path, P(synthetic)) for each image file."""
        return [(Path(p), self.probability(load_grey(p))) for p in paths]
