"""The detector explain graph cut in two (vision.xai.split_graph): one forward for boxes and maps.

On the bundled blood-cells model: the split's forward part gives the plain model's outputs bit
for bit, and `detect_and_explain` (forward part, NMS, backward part) gives the same boxes and
heat maps as the plain run followed by the whole explain graph. Without the ``onnx`` package,
or when the parts do not reproduce the plain model, nothing is split and the old path stands.
"""

from __future__ import annotations

import builtins
import dataclasses

import numpy as np
import pytest

from vision.config import load_config
from vision.loader import load_model
from vision.paths import PROJECT_ROOT
from vision.runtime import OnnxModel
from vision.types import Image
from vision.xai import split_graph
from vision.xai.explainer import Explainer

pytest.importorskip("onnx")
MODEL_DIR = PROJECT_ROOT / "models" / "blood-cells"


@pytest.fixture(scope="module")
def loaded():
    """The bundled detector on one thread (ONNX Runtime on several is not bit-reproducible)."""
    config = load_config(MODEL_DIR)
    config = dataclasses.replace(
        config, runtime=dataclasses.replace(config.runtime, intra_op_threads=1)
    )
    return load_model(MODEL_DIR, explain=True, providers=("cpu",), config=config)


def _cells_image() -> Image:
    """A synthetic smear: pale background with dark discs (gives the detector boxes)."""
    rng = np.random.default_rng(3)
    image = np.full((480, 640, 3), 220, dtype=np.uint8)
    yy, xx = np.mgrid[:480, :640]
    for _ in range(12):
        cy, cx, r = rng.integers(40, 440), rng.integers(40, 600), rng.integers(25, 45)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (170, 60, 90)
    return Image(image)


def test_cut_points_are_image_values_the_targets_read(loaded) -> None:
    import onnx

    graph = onnx.load(str(loaded.explainer.session.path)).graph
    cut = split_graph.cut_points(graph)
    assert cut and "images" not in cut
    assert not set(cut) & set(split_graph.TARGET_INPUTS)
    assert len(cut) == len(set(cut))


def test_a_transpose_only_the_targets_multiply_by_goes_to_the_backward_part() -> None:
    """images -> Transpose -> MatMul with a target-dependent operand: the cut is the
    Transpose's input, so it runs in the backward part (folded into the product there); a
    Transpose that an image-only node also reads stays in the forward part."""
    from onnx import TensorProto, helper

    def graph(extra_reader: bool):
        nodes = [
            helper.make_node("Transpose", ["images"], ["t"], perm=[1, 0]),
            helper.make_node("Cast", ["target_class"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["c", "t"], ["cam"]),
        ]
        if extra_reader:
            nodes.append(helper.make_node("Relu", ["t"], ["image_only"]))
        return helper.make_graph(nodes, "g", [], [])

    assert split_graph.cut_points(graph(False)) == ["images"]
    assert split_graph.cut_points(graph(True)) == ["t"]


def _plain_boxes(loaded):
    tensor, meta = loaded.pipeline.preprocess(_cells_image())
    outputs = loaded.session.run({"images": tensor[np.newaxis]})
    plain = loaded.pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
    assert plain.detections, "the synthetic image should give boxes"
    return tensor, meta, plain


def test_one_pass_equals_plain_run_then_whole_graph(loaded) -> None:
    explainer = loaded.explainer
    assert explainer.split is not None
    assert explainer.forward_once(loaded.session)
    tensor, meta, plain = _plain_boxes(loaded)
    whole = Explainer(loaded.config, OnnxModel(explainer.path, explainer.spec))  # keeps it
    assert whole.whole_loaded
    before = whole.explain_detections(tensor, meta, plain)
    result, after = explainer.detect_and_explain(tensor, meta, loaded.pipeline)
    assert result.detections == plain.detections
    assert len(after) == len(before) == min(len(plain.detections), explainer.limit())
    for old, new in zip(before, after, strict=True):
        assert new.detection == old.detection
        assert np.array_equal(new.heat, old.heat)
    _, capped = explainer.detect_and_explain(tensor, meta, loaded.pipeline, max_findings=1)
    assert [e.detection for e in capped] == [before[0].detection]


def _no_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(f"no module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)


def test_the_bundled_detectors_ship_current_split_parts() -> None:
    for name in ("blood-cells", "pcb-defects"):
        graph = PROJECT_ROOT / "models" / name / "1" / "model.explain.onnx"
        assert split_graph.stored_split(graph) is not None, f"{name}: run split_graph on it"


def test_stored_parts_serve_without_onnx(loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_onnx(monkeypatch)  # a server install: ONNX Runtime, no onnx package
    explainer = Explainer(loaded.config, loaded.explainer.session)
    assert explainer.split is not None
    assert explainer.forward_once(loaded.session)


def test_no_split_without_onnx_or_current_parts(loaded, monkeypatch, tmp_path) -> None:
    forward, backward, record = split_graph.part_paths(loaded.explainer.session.path)
    stale = tmp_path / record.name
    stale.write_text(record.read_text().replace('"source_sha256": "', '"source_sha256": "0'))
    copies = (forward, backward, stale)
    monkeypatch.setattr(split_graph, "part_paths", lambda _path: copies)
    assert split_graph.stored_split(loaded.explainer.session.path) is None  # stale: ignored
    assert Explainer(loaded.config, loaded.explainer.session).split is not None  # cut now
    _no_onnx(monkeypatch)
    explainer = Explainer(loaded.config, loaded.explainer.session)
    assert explainer.split is None
    assert not explainer.forward_once(loaded.session)


def test_write_split_stores_parts_that_load_as_the_cut(loaded, tmp_path) -> None:
    graph = tmp_path / "model.explain.onnx"
    graph.write_bytes(loaded.explainer.session.path.read_bytes())
    files = split_graph.write_split(graph)
    assert files == list(split_graph.part_paths(graph))
    stored = split_graph.stored_split(graph)
    assert stored is not None and stored == split_graph._cut(graph)


class _Shifted:
    """A plain model whose outputs differ from the graph's in one value (by 1 % of the largest,
    beyond `split_graph.agree`'s tolerance)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def run(self, feeds: dict) -> dict:
        out = {k: v.copy() for k, v in self.inner.run(feeds).items()}
        for value in out.values():
            value.flat[0] += 0.01 * np.abs(value).max()
        return out


def test_agree_tolerates_rounding_not_errors() -> None:
    want = np.array([[0.0, 2.0], [-4.0, 1.0]], dtype=np.float32)
    assert split_graph.agree(want + np.float32(1e-5), want)
    assert not split_graph.agree(want + np.float32(1e-2), want)
    assert not split_graph.agree(want[:1], want)
    assert not split_graph.agree(want.astype(np.float64), want)


def test_not_used_when_plain_outputs_differ(loaded) -> None:
    explainer = Explainer(loaded.config, loaded.explainer.session)
    assert explainer.split is not None
    assert not explainer.forward_once(_Shifted(loaded.session))
    assert not explainer.forward_once(loaded.session)  # remembered, not re-checked


def test_segmenters_and_per_target_graphs_are_not_split(loaded) -> None:
    config = dataclasses.replace(loaded.config, task="segmentation")
    assert Explainer(config, loaded.explainer.session).split is None


def test_a_failed_cut_leaves_the_whole_graph(loaded, monkeypatch, caplog) -> None:
    from vision.xai import explainer as explainer_module

    def broken(*_args):
        raise RuntimeError("cannot cut")

    monkeypatch.setattr(explainer_module, "open_split", broken)
    with caplog.at_level("WARNING"):
        explainer = Explainer(loaded.config, loaded.explainer.session)
    assert explainer.split is None and "not split (RuntimeError: cannot cut)" in caplog.text
    assert not explainer.forward_once(loaded.session)


def test_the_whole_graph_goes_when_the_split_serves(loaded) -> None:
    """Loaded with its plain model, a split detector lets the whole graph's session go (RSS,
    issue 19 item 1); `explain_detections` then runs the parts and gives the whole graph's maps
    (bit for bit on one thread); `session` loads the whole graph again when asked for."""
    spec = loaded.explainer.spec
    whole = Explainer(loaded.config, OnnxModel(loaded.explainer.path, spec))
    lean = Explainer(loaded.config, OnnxModel(whole.path, spec), plain=loaded.session)
    assert whole.whole_loaded and not lean.whole_loaded
    tensor, meta, plain = _plain_boxes(loaded)
    want = whole.explain_detections(tensor, meta, plain, max_findings=3)
    got = lean.explain_detections(tensor, meta, plain, max_findings=3)
    assert [e.detection for e in got] == [e.detection for e in want] and len(got) == 3
    assert all(np.array_equal(g.heat, w.heat) for g, w in zip(got, want, strict=True))
    assert not lean.whole_loaded
    assert lean.session.path == whole.path and lean.whole_loaded


def test_the_whole_graph_stays_when_the_split_cannot_serve(loaded) -> None:
    spec = loaded.explainer.spec
    shifted = Explainer(
        loaded.config, OnnxModel(loaded.explainer.path, spec), plain=_Shifted(loaded.session)
    )
    assert shifted.split is not None and shifted.whole_loaded
    assert not shifted.forward_once(loaded.session)


SHRINK = "memory.enable_memory_arena_shrinkage"


def _shrinks(run_options) -> bool:
    try:
        return run_options.get_run_config_entry(SHRINK) == "cpu:0"
    except RuntimeError:  # not set: the arena keeps its chunks
        return False


@pytest.mark.parametrize("keep", [True, False])
def test_the_split_keeps_its_arena_as_the_config_says(loaded, keep: bool) -> None:
    explain = dataclasses.replace(loaded.config.explain, keep_arena=keep)
    config = dataclasses.replace(loaded.config, explain=explain)
    explainer = Explainer(config, loaded.explainer.session)
    assert explainer.split is not None
    assert _shrinks(explainer.split.run_options) is not keep
    image = _cells_image()
    tensor, meta = loaded.pipeline.preprocess(image)
    outputs, state = explainer.split.forward(tensor[None])
    classes, anchors = np.array([0, 1], dtype=np.int64), np.array([5, 3000], dtype=np.int64)
    cams = explainer.split.cams(state, classes, anchors)
    again = loaded.explainer.split.cams(
        loaded.explainer.split.forward(tensor[None])[1], classes, anchors
    )
    assert np.array_equal(cams, again)  # one thread: the arena changes no value
