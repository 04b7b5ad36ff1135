"""The one INT8 quantiser (onnxruntime.quantization): static QDQ, per-channel weights, MinMax.

Both tasks use it: segmentation quantises every supported op; detection passes
`op_types=("Conv",)` so that its decoded head (boxes in pixels concatenated with scores in 0..1)
stays float, since one shared activation scale for both would round every score to zero.

`Int8Options` holds the knobs `bench.int8` compares (QDQ vs QOperator, per-channel or per-tensor
weights, `reduce_range`, unsigned or signed activations); the defaults are what the exports use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx


class CalibrationReader:
    """onnxruntime.quantization CalibrationDataReader over a list of batches of one input."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self._batches = [np.asarray(b, np.float32) for b in batches]
        self._input = input_name
        self._items = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next calibration feed, or None when all were given."""
        batch = next(self._items, None)
        return None if batch is None else {self._input: batch}

    def rewind(self) -> None:
        """Start over from the first batch."""
        self._items = iter(self._batches)


@dataclass(frozen=True)
class Int8Options:
    """How to quantise: `qdq` (QuantizeLinear/DequantizeLinear pairs, which ORT fuses at load)
    or `qoperator` (QLinearConv and friends written out); per-channel weights; `reduce_range`
    (7-bit weights, for CPUs whose u8 x s8 multiply-add saturates: AVX2 without VNNI);
    `signed_activations` (QInt8 activations instead of QUInt8); `float_tail`: quantise every
    supported op (activations too, so int8 flows from conv to conv) except those after the last
    Conv (a detector's decoded head), instead of the caller's `op_types`."""

    quant_format: str = "qdq"
    per_channel: bool = True
    reduce_range: bool = False
    signed_activations: bool = False
    float_tail: bool = False  # every op up to the last Conv int8, the ops after it float

    @property
    def label(self) -> str:
        """A short name, e.g. `qdq-pc` or `qoperator-pt-rr-s8`."""
        parts = [self.quant_format, "pc" if self.per_channel else "pt"]
        parts += ["rr"] * self.reduce_range + ["s8"] * self.signed_activations
        parts += ["tail"] * self.float_tail
        return "-".join(parts)


def _tail_after_last_conv(path: Path) -> list[str]:
    """Names of the nodes after the graph's last Conv (naming unnamed nodes, saved in place)."""
    model = onnx.load(str(path))
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"node_{index}_{node.op_type}"
    onnx.save(model, str(path))
    nodes = list(model.graph.node)
    last = max((i for i, n in enumerate(nodes) if n.op_type == "Conv"), default=len(nodes))
    return [n.name for n in nodes[last + 1 :]]


def quantize_int8(
    onnx_path: str | Path,
    calib_batches: Sequence[np.ndarray],
    out_path: str | Path,
    op_types: Sequence[str] | None = None,
    options: Int8Options | None = None,
) -> Path:
    """Static INT8 (by default QDQ, QUInt8 activations, per-channel QInt8 weights; MinMax
    calibration) of a float model into `out_path`; `op_types`: quantise only these ops (default:
    all supported); `options`: the variant (`Int8Options`)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    options = options or Int8Options()
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if options.quant_format not in formats:
        raise ValueError(f"quant_format {options.quant_format!r}: use one of {sorted(formats)}")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    input_name = onnx.load(str(prepared)).graph.input[0].name
    exclude = _tail_after_last_conv(prepared) if options.float_tail else []
    if options.float_tail:
        op_types = None
    quantize_static(
        str(prepared),
        str(out_path),
        CalibrationReader(input_name, calib_batches),
        quant_format=formats[options.quant_format],
        activation_type=QuantType.QInt8 if options.signed_activations else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        op_types_to_quantize=list(op_types) if op_types else None,
        nodes_to_exclude=exclude,
    )
    prepared.unlink(missing_ok=True)
    onnx.checker.check_model(str(out_path))
    return out_path
