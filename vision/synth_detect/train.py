"""Train the real-vs-synthetic detector (torch) and export it to ONNX.

A small fully convolutional net maps a grey image to a map of cell logits (one per 32 px); the
image logit is their maximum, so a model trained on native-resolution crops scores images of
any size at check time (through `detector.aligned_views`). Training is multiple instance: a
synthetic crop is judged on the cells over its pasted box, a real crop on all of its cells.
Batches are half real, half synthetic (generators equally often).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vision.synth_detect.detector import (
    CANON_QUALITY,
    STRIDE,
    WRITER_QUALITY,
    Box,
    Item,
    box_cells,
    canonical,
    crop_window,
    jpeg_roundtrip,
    load_grey,
    pad_to,
    window_clear_of,
)


@dataclass
class TrainConfig:
    """Training settings (defaults: about 0.15 s a step on one 2-core CPU thread)."""

    steps: int = 800
    batch: int = 32
    crop: int = 128
    lr: float = 2e-3
    seed: int = 0
    threads: int = 1
    writer_quality: int = WRITER_QUALITY  # real images also re-saved like the synth writer
    canonical_quality: int = CANON_QUALITY
    mine: int = 2  # negative crops: hardest of this many candidates (after the first quarter)
    background: float = 0.25  # share of negatives cut from synthetic images, clear of the paste
    context: bool = True  # one more 3x3 conv on the logit grid: a 127 px receptive field
    augment: bool = True  # top-bottom flips, global gain/offset (both classes alike)
    width: int = 16  # channels of the first stage (x1.5, x2, x3, x4 after)


def build_model(width: int = 16, context: bool = True):
    """Five stride-2 Conv-BN-ReLU stages (+ a stride-1 context conv) -> 1x1 logit map (`body`,
    one cell per 32 px) -> global max (one logit)."""
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    class MaxLogit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [2, width, int(width * 1.5), width * 2, width * 3, width * 4]
            layers: list[nn.Module] = []
            for cin, cout in zip(chans, chans[1:], strict=False):
                layers += block(cin, cout, 2)
            if context:
                layers += block(chans[-1], chans[-1], 1)
            layers.append(nn.Conv2d(chans[-1], 1, 1))
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            return self.body(x).amax(dim=(2, 3))

    return MaxLogit()


@dataclass
class Batch:
    """Canonical crops (N, 2, S, S), labels (N, 1; 1 = synthetic) and, per crop, the logit-map
    cells its label is about (N, c, c): the pasted region's cells for synthetic crops, every
    cell for real ones."""

    inputs: np.ndarray
    labels: np.ndarray
    cells: np.ndarray


class CropSampler:
    """Pixels kept in memory; draws balanced batches of canonical crops with labels.

    Negatives: real images (plain or re-saved like the writer; half around real defects, the
    defect categories drawn equally often, so rare real defects like the pasted ones are seen) and,
    for `cfg.background` of them, synthetic images away from the pasted boxes, so the untouched
    background of a synthetic image is taught as real and only the paste can give it away.
    Positives: synthetic images around a pasted box, judged on the cells that cover the box."""

    def __init__(self, items: list[Item], cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.real = [(it, load_grey(it.path)) for it in items if not it.synthetic]
        self.resaved = [jpeg_roundtrip(px, cfg.writer_quality) for _, px in self.real]
        by_category: dict[str, list[int]] = {}
        for i, (it, _) in enumerate(self.real):
            if it.boxes:
                by_category.setdefault(it.group, []).append(i)
        self.real_defects = list(by_category.values())  # categories drawn equally often
        groups = sorted({it.group for it in items if it.synthetic})
        self.synth = {
            g: [(it, load_grey(it.path)) for it in items if it.synthetic and it.group == g]
            for g in groups
        }
        if not self.real or not self.synth:
            raise ValueError("training needs real and synthetic images")
        self.cells = -(-cfg.crop // STRIDE)

    def _flipped(self, pixels: np.ndarray, boxes: list[Box]) -> tuple[np.ndarray, list[Box]]:
        """Padded to the crop size, mirrored left-right (and, with `augment`, top-bottom) half
        the time each, boxes mirrored with it."""
        pixels = pad_to(pixels, self.cfg.crop)
        h, w = pixels.shape
        if self.rng.random() < 0.5:
            pixels, boxes = pixels[:, ::-1], [(w - x2, y1, w - x1, y2) for x1, y1, x2, y2 in boxes]
        if self.cfg.augment and self.rng.random() < 0.5:
            pixels, boxes = pixels[::-1], [(x1, h - y2, x2, h - y1) for x1, y1, x2, y2 in boxes]
        return pixels, boxes

    def _cut(self, pixels: np.ndarray, top: int, left: int) -> np.ndarray:
        """The canonical input of one window; with `augment`, a global gain and offset first
        (the same for pasted and untouched pixels, so it hides no paste)."""
        size = self.cfg.crop
        crop = np.ascontiguousarray(pixels[top : top + size, left : left + size])
        if self.cfg.augment and self.rng.random() < 0.5:
            gain, offset = self.rng.uniform(0.8, 1.2), self.rng.uniform(-20, 20)
            crop = np.clip(crop * gain + offset, 0, 255).astype(np.uint8)
        return canonical(crop, self.cfg.canonical_quality)

    def _background_crop(self) -> np.ndarray | None:
        item, pixels = self._synth_pick()
        pixels, boxes = self._flipped(pixels, item.boxes)
        window = window_clear_of(pixels.shape, boxes, self.cfg.crop, self.rng)
        return None if window is None else self._cut(pixels, *window)

    def _real_crop(self) -> np.ndarray:
        rng = self.rng
        if rng.random() < self.cfg.background:
            crop = self._background_crop()
            if crop is not None:
                return crop
        use_defect = bool(self.real_defects) and rng.random() < 0.5
        if use_defect:
            pool = self.real_defects[int(rng.integers(len(self.real_defects)))]
            i = int(pool[int(rng.integers(len(pool)))])
        else:
            i = int(rng.integers(len(self.real)))
        pixels = self.resaved[i] if rng.random() < 0.5 else self.real[i][1]
        pixels, boxes = self._flipped(pixels, self.real[i][0].boxes if use_defect else [])
        return self._cut(pixels, *crop_window(pixels.shape, boxes, self.cfg.crop, rng))

    def _synth_pick(self) -> tuple[Item, np.ndarray]:
        groups = list(self.synth)
        pool = self.synth[groups[int(self.rng.integers(len(groups)))]]
        return pool[int(self.rng.integers(len(pool)))]

    def _synth_crop(self) -> tuple[np.ndarray, np.ndarray]:
        item, pixels = self._synth_pick()
        pixels, boxes = self._flipped(pixels, item.boxes)
        top, left = crop_window(pixels.shape, boxes, self.cfg.crop, self.rng)
        return self._cut(pixels, top, left), box_cells(boxes, top, left, self.cfg.crop)

    def batch(self, scorer=None) -> Batch:
        """Half negatives, half positives. With `scorer` (inputs -> logits), each negative is
        the highest-scoring of `cfg.mine` candidates (hard negatives: at check time the image
        score is a max over every position)."""
        n_real = self.cfg.batch // 2
        n_synth = self.cfg.batch - n_real
        k = self.cfg.mine if scorer is not None else 1
        real = np.stack([self._real_crop() for _ in range(n_real * k)])
        if k > 1:
            best = np.asarray(scorer(real)).reshape(n_real, k).argmax(1)
            real = real.reshape(n_real, k, *real.shape[1:])[np.arange(n_real), best]
        synth, cells = zip(*(self._synth_crop() for _ in range(n_synth)), strict=True)
        all_cells = np.ones((n_real, self.cells, self.cells), bool)
        labels = np.r_[np.zeros(n_real), np.ones(n_synth)].astype(np.float32)
        return Batch(
            np.concatenate([real, np.stack(synth)]),
            labels[:, None],
            np.concatenate([all_cells, np.stack(cells)]),
        )


def batch_loss(logit_map, batch: Batch, loss_fn):
    """BCE of each crop's max over its labelled cells (multiple instance: one pasted cell is
    enough, every real cell must stay low), plus half the mean BCE of every negative cell."""
    import torch

    cells = torch.from_numpy(batch.cells)[:, None]
    labels = torch.from_numpy(batch.labels)
    bag = logit_map.masked_fill(~cells, float("-inf")).amax(dim=(2, 3))
    negatives = labels[:, 0] == 0
    dense = loss_fn(logit_map[negatives], torch.zeros_like(logit_map[negatives]))
    return loss_fn(bag, labels) + 0.5 * dense


def train(items: list[Item], cfg: TrainConfig, log=print):
    """Train on `items`; returns (model in eval mode, training summary)."""
    import torch

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    sampler = CropSampler(items, cfg)
    model = build_model(cfg.width, cfg.context)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started, running = time.perf_counter(), []
    model.train()

    def scorer(x: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).numpy()
        model.train()
        return logits

    for step in tqdm(range(cfg.steps), desc="detector", unit="step", mininterval=5):
        batch = sampler.batch(scorer if step >= cfg.steps // 4 else None)
        loss = batch_loss(model.body(torch.from_numpy(batch.inputs)), batch, loss_fn)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running.append(float(loss.detach()))
        if (step + 1) % max(cfg.steps // 10, 1) == 0:
            log(f"step {step + 1}/{cfg.steps}  loss {np.mean(running[-50:]):.3f}")
    summary = {
        **asdict(cfg),
        "seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(float(np.mean(running[-50:])), 4),
        "real_images": len(sampler.real),
        "synthetic_images": {g: len(v) for g, v in sampler.synth.items()},
    }
    return model.eval(), summary


def flip_averaged(model, vertical: bool = True):
    """The exported scorer: the image logit (max over cells) averaged over the image and its
    mirror images (left-right, and with `vertical` also top-bottom and both: the flips training
    used), so a single spurious cell counts for less than a paste every view agrees on."""
    from torch import nn

    flips = [(), (3,)] + ([(2,), (2, 3)] if vertical else [])

    class FlipAveraged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model.body

        def forward(self, x):
            logits = [self.body(x.flip(d) if d else x).amax(dim=(2, 3)) for d in flips]
            return sum(logits) / len(logits)

    return FlipAveraged().eval()


def export_onnx(model, path: Path, metadata: dict[str, object], vertical: bool = True) -> Path:
    """ONNX (opset 17, dynamic batch/height/width) of `flip_averaged(model, vertical)`, with
    `metadata` as model properties."""
    import warnings

    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scorer = flip_averaged(model.eval(), vertical)
    example = torch.zeros(1, 2, 128, 160)
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logit": {0: "batch"}}
    with warnings.catch_warnings():  # the TorchScript exporter: dynamic H and W, no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            scorer,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logit"],
            opset_version=17,
            dynamic_axes=axes,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    check_parity(scorer, path)
    return set_metadata(path, metadata)


def check_parity(scorer, path: Path, atol: float = 1e-3) -> float:
    """`vision.export.parity_check` on one random batch of another size than the export example
    (dynamic axes); raises if ONNX and torch differ by more than `atol`, returns the difference."""
    from vision.export import parity_check

    batch = np.random.default_rng(0).normal(size=(2, 2, 96, 224)).astype(np.float32)
    diff = max(parity_check(scorer, path, [batch])["max_abs_diff"].values())
    if diff > atol:
        raise RuntimeError(f"ONNX export differs from torch: max |diff| {diff:.2e}")
    return diff


def set_metadata(path: Path, metadata: dict[str, object]) -> Path:
    """Set (add or replace) string metadata properties of an ONNX file in place."""
    import onnx

    proto = onnx.load(str(path))
    kept = {p.key: p.value for p in proto.metadata_props}
    kept.update({k: str(v) for k, v in metadata.items()})
    del proto.metadata_props[:]
    for key, value in kept.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return Path(path)
