"""A DeepPCB training view with one class cut to a small share of its training boxes.

Images are kept in seeded order with their boxes of the class until `keep` of the class's
training boxes are reached. In every other training image each box of the class is erased: its
region (plus a 2-px margin) is replaced by the aligned defect-free template, and its label line is
dropped, so no unlabelled instance stays and the other classes keep all their boxes. An image
whose erased region would touch another box is removed instead. The test list is unchanged.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image as PILImage

from vision.datasets.detection import DEEPPCB_CLASSES
from vision.datasets.images import load_grey

MARGIN = 2


def pcb_lines(root: Path, split: str) -> list[str]:
    """The lines of `PCBData/<split>.txt`."""
    text = (Path(root) / "PCBData" / f"{split}.txt").read_text()
    return [ln for ln in text.splitlines() if ln.split()]


def _rows(root: Path, line: str) -> list[list[int]]:
    text = (Path(root) / "PCBData" / line.split()[1]).read_text()
    rows = [r.replace(",", " ").split() for r in text.splitlines()]
    return [[int(float(v)) for v in r[:5]] for r in rows if len(r) >= 5]


def _grow(row: list[int], h: int, w: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = row[:4]
    return max(x1 - MARGIN, 0), max(y1 - MARGIN, 0), min(x2 + MARGIN, w), min(y2 + MARGIN, h)


def _touches(a: tuple[int, int, int, int], row: list[int]) -> bool:
    return a[0] < row[2] and row[0] < a[2] and a[1] < row[3] and row[1] < a[3]


def erase(root: Path, line: str, class_id: int, out: Path) -> str | None:
    """Write the image of `line` with the class's boxes replaced by the template, and its other
    labels, under `out`/masked; the new split line, or None when an erased box touches another."""
    base = Path(root) / "PCBData"
    rel = Path(line.split()[0])
    test = base / rel.with_name(f"{rel.stem}_test{rel.suffix}")
    temp = base / rel.with_name(f"{rel.stem}_temp{rel.suffix}")
    rows = _rows(root, line)
    image, template = load_grey(test).copy(), load_grey(temp)
    h, w = image.shape
    others = [r for r in rows if r[4] != class_id]
    for row in (r for r in rows if r[4] == class_id):
        x1, y1, x2, y2 = region = _grow(row, h, w)
        if any(_touches(region, o) for o in others):
            return None
        image[y1:y2, x1:x2] = template[y1:y2, x1:x2]
    name = f"masked/{rel.parent.name}/{rel.stem}"
    target = Path(out) / "PCBData" / f"{name}_test.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(image).save(target)
    labels = Path(out) / "PCBData" / f"masked/{rel.parent.name}_not/{rel.stem}.txt"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text("".join(" ".join(map(str, r)) + "\n" for r in others))
    return f"{name}.png masked/{rel.parent.name}_not/{rel.stem}.txt"


def _link_groups(root: Path, base: Path) -> None:
    for group in (Path(root) / "PCBData").glob("group*"):
        link = base / group.name
        if not link.exists():
            link.symlink_to(group.resolve(), target_is_directory=True)


def pcb_view(root: Path, out: Path, cls: str, keep: float, seed: int = 0) -> dict:
    """Write the view (symlinked groups, erased copies, split lists) under `out`; counts."""
    class_id = DEEPPCB_CLASSES.index(cls) + 1
    lines = pcb_lines(root, "trainval")
    counts = {ln: sum(r[4] == class_id for r in _rows(root, ln)) for ln in lines}
    total = sum(counts.values())
    with_cls = [ln for ln in lines if counts[ln]]
    random.Random(seed).shuffle(with_cls)
    kept: list[str] = []
    for ln in with_cls:
        if kept and sum(counts[k] for k in kept) >= keep * total:
            break
        kept.append(ln)
    base = Path(out) / "PCBData"
    base.mkdir(parents=True, exist_ok=True)
    _link_groups(root, base)
    train, removed = [], 0
    for ln in lines:
        if not counts[ln] or ln in kept:
            train.append(ln)
            continue
        new = erase(root, ln, class_id, out)
        removed += new is None
        train += [new] if new else []
    (base / "trainval.txt").write_text("\n".join(train) + "\n")
    (base / "test.txt").write_text("\n".join(pcb_lines(root, "test")) + "\n")
    boxes = sum(counts[k] for k in kept)
    return {
        "class": cls,
        "boxes_total": total,
        "boxes_kept": boxes,
        "kept_share": round(boxes / max(total, 1), 4),
        "images_with_class_kept": len(kept),
        "images_erased": len(with_cls) - len(kept) - removed,
        "images_removed_overlap": removed,
        "trainval_images": len(train),
    }


def kept_sources(view: Path) -> set[str]:
    """Dataset-relative `_test` paths of the view's unmodified `trainval` images (the only
    allowed synthesis sources)."""
    out = set()
    for line in pcb_lines(view, "trainval"):
        rel = Path("PCBData") / line.split()[0]
        if rel.parts[1] != "masked":
            out.add(str(rel.with_name(f"{rel.stem}_test{rel.suffix}")))
    return out
