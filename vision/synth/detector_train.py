"""Train the real-vs-synthetic detector (torch) and export it to ONNX.

A small fully convolutional net maps a grey image to a map of patch logits; the image logit is
their maximum, so a model trained on native-resolution crops around pasted regions (and around
real defects, so "has a defect" is no cue) scores whole images of any size at check time.
Batches are half real, half synthetic (generators equally often); half of the real crops are
around real defects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vision.synth.detector import (
    CANON_QUALITY,
    WRITER_QUALITY,
    Item,
    canonical,
    jpeg_roundtrip,
    load_grey,
    sample_crop,
)


@dataclass
class TrainConfig:
    """Training settings (defaults fit a 2-core CPU in a few minutes)."""

    steps: int = 800
    batch: int = 48
    crop: int = 96
    lr: float = 2e-3
    seed: int = 0
    threads: int = 1
    writer_quality: int = WRITER_QUALITY  # real images also re-saved like the synth writer
    canonical_quality: int = CANON_QUALITY
    mine: int = 3  # real crops: hardest of this many candidates (after the first quarter)


def build_model(width: int = 16):
    """Five stride-2 Conv-BN-ReLU stages -> 1x1 logit map -> global max (one logit)."""
    from torch import nn

    class MaxLogit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [2, width, int(width * 1.5), width * 2, width * 3, width * 4]
            layers: list[nn.Module] = []
            for cin, cout in zip(chans, chans[1:], strict=False):
                layers += [
                    nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                ]
            layers.append(nn.Conv2d(chans[-1], 1, 1))
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            return self.body(x).amax(dim=(2, 3))

    return MaxLogit()


class CropSampler:
    """Pixels kept in memory; draws balanced batches of canonical crops with labels."""

    def __init__(self, items: list[Item], cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.real = [(it, load_grey(it.path)) for it in items if not it.synthetic]
        self.resaved = [jpeg_roundtrip(px, cfg.writer_quality) for _, px in self.real]
        self.real_defects = [i for i, (it, _) in enumerate(self.real) if it.boxes]
        groups = sorted({it.group for it in items if it.synthetic})
        self.synth = {
            g: [(it, load_grey(it.path)) for it in items if it.synthetic and it.group == g]
            for g in groups
        }
        if not self.real or not self.synth:
            raise ValueError("training needs real and synthetic images")

    def _real_crop(self) -> np.ndarray:
        rng, cfg = self.rng, self.cfg
        use_defect = bool(self.real_defects) and rng.random() < 0.5
        i = self.real_defects[rng.integers(len(self.real_defects))] if use_defect else None
        i = int(rng.integers(len(self.real))) if i is None else int(i)
        pixels = self.resaved[i] if rng.random() < 0.5 else self.real[i][1]
        boxes = self.real[i][0].boxes if use_defect else []
        return sample_crop(pixels, boxes, cfg.crop, rng)

    def _synth_crop(self) -> np.ndarray:
        groups = list(self.synth)
        pool = self.synth[groups[int(self.rng.integers(len(groups)))]]
        item, pixels = pool[int(self.rng.integers(len(pool)))]
        return sample_crop(pixels, item.boxes, self.cfg.crop, self.rng)

    def _input(self, crop: np.ndarray) -> np.ndarray:
        crop = crop[:, ::-1] if self.rng.random() < 0.5 else crop
        return canonical(np.ascontiguousarray(crop), self.cfg.canonical_quality)

    def batch(self, scorer=None) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2, crop, crop) float32 inputs and (N, 1) labels (1 = synthetic), half each.
        With `scorer` (inputs -> logits), each real crop is the highest-scoring of `cfg.mine`
        candidates (hard negatives: at check time the image score is a max over positions)."""
        n_real = self.cfg.batch // 2
        n_synth = self.cfg.batch - n_real
        k = self.cfg.mine if scorer is not None else 1
        real = np.stack([self._input(self._real_crop()) for _ in range(n_real * k)])
        if k > 1:
            best = np.asarray(scorer(real)).reshape(n_real, k).argmax(1)
            real = real.reshape(n_real, k, *real.shape[1:])[np.arange(n_real), best]
        synth = np.stack([self._input(self._synth_crop()) for _ in range(n_synth)])
        labels = np.r_[np.zeros(n_real), np.ones(n_synth)].astype(np.float32)
        return np.concatenate([real, synth]), labels[:, None]


def train(items: list[Item], cfg: TrainConfig, log=print):
    """Train on `items`; returns (model in eval mode, training summary)."""
    import torch

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    sampler = CropSampler(items, cfg)
    model = build_model()
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

    for step in range(cfg.steps):
        x, y = sampler.batch(scorer if step >= cfg.steps // 4 else None)
        logits = model(torch.from_numpy(x))
        loss = loss_fn(logits, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running.append(float(loss.detach()))
        if (step + 1) % max(cfg.steps // 10, 1) == 0:
            log(f"step {step + 1}/{cfg.steps}  loss {np.mean(running[-50:]):.3f}")
    summary = {
        "steps": cfg.steps,
        "batch": cfg.batch,
        "crop": cfg.crop,
        "seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(float(np.mean(running[-50:])), 4),
        "real_images": len(sampler.real),
        "synthetic_images": {g: len(v) for g, v in sampler.synth.items()},
    }
    return model.eval(), summary


def export_onnx(model, path: Path, metadata: dict[str, object]) -> Path:
    """ONNX (opset 17, dynamic batch/height/width) with `metadata` as model properties."""
    import warnings

    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 2, 128, 160)
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logit": {0: "batch"}}
    with warnings.catch_warnings():  # the TorchScript exporter: dynamic H and W, no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logit"],
            opset_version=17,
            dynamic_axes=axes,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return set_metadata(path, metadata)


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
