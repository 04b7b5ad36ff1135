"""The one INT8 quantiser (onnxruntime.quantization): static QDQ, per-channel weights, MinMax.

Both tasks use it: segmentation quantises every supported op; detection passes
`op_types=("Conv",)` so that its decoded head (boxes in pixels concatenated with scores in 0..1)
stays float, since one shared activation scale for both would round every score to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def quantize_int8(
    onnx_path: str | Path,
    calib_batches: Sequence[np.ndarray],
    out_path: str | Path,
    op_types: Sequence[str] | None = None,
) -> Path:
    """Static INT8 (QDQ, QUInt8 activations, per-channel QInt8 weights, MinMax calibration) of a
    float model into `out_path`; `op_types`: quantise only these ops (default: all supported)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    input_name = onnx.load(str(prepared)).graph.input[0].name
    quantize_static(
        str(prepared),
        str(out_path),
        CalibrationReader(input_name, calib_batches),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=list(op_types) if op_types else None,
    )
    prepared.unlink(missing_ok=True)
    onnx.checker.check_model(str(out_path))
    return out_path
