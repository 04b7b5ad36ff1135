"""HiResCAM through the convolutions that read the target layer (`tap_cam`, issue 19 item 4).

`tap_cam` forms sum_c A_c * dS/dA_c from the gradient at a reading convolution's output
without the convolution's transposed product; it must equal autograd's input gradient times
the activation for strides, paddings and odd sizes where the transposed convolution needs an
output padding.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vision.xai.local_heads import tap_cam

CASES = [  # (kernel, stride, padding, input size)
    (3, 2, 1, 16),
    (3, 2, 1, 13),  # odd: no output padding
    (1, 1, 0, 9),
    (5, 1, 2, 11),
    (3, 1, 1, 7),
    (2, 2, 0, 10),
]


@pytest.mark.parametrize(("kernel", "stride", "padding", "size"), CASES)
def test_tap_cam_equals_activation_times_input_gradient(
    kernel: int, stride: int, padding: int, size: int
) -> None:
    gen = torch.Generator().manual_seed(kernel * 100 + size)
    conv = nn.Conv2d(6, 5, kernel, stride, padding, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    activation = torch.randn(1, 6, size, size, generator=gen)
    out_shape = conv(activation).shape
    grads = torch.randn(4, *out_shape[1:], generator=gen)  # K = 4 gradients at the output
    want = []
    for g in grads:
        a = activation.clone().requires_grad_(True)
        (conv(a) * g[None]).sum().backward()
        want.append((a.grad * activation).sum(1)[0])
    got = tap_cam(activation, conv, grads)
    assert got.shape == (4, size, size)
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-5, atol=1e-4)


def _module(layer: str):
    from vision.detect.model import DetectorSpec, build_model
    from vision.xai.explain_graph import build_explain_module
    from vision.xai.shared_graph import SharedExplainModule

    torch.manual_seed(0)
    model = build_model(DetectorSpec(in_channels=1, num_classes=2, widths=(8, 16, 16, 16), neck=16))
    return SharedExplainModule(build_explain_module(model, layer, "detection", "hirescam"))


def test_reading_convolutions_are_found_only_when_they_are_the_only_readers() -> None:
    images = torch.zeros(1, 1, 64, 64)
    found = _module("backbone.stages.0")._consumer_convs(images)
    assert found is not None
    convs, shapes = found
    assert [tuple(c.weight.shape) for c in convs] == [(16, 16, 3, 3), (16, 16, 1, 1)]
    assert shapes == [(1, 16, 4, 4), (1, 16, 8, 8)]
    # lateral.0's output goes into the top-down sum (no module reads it): no shortcut.
    assert _module("lateral.0")._consumer_convs(images) is None
