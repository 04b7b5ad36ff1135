"""Explainability: Grad-CAM computed inside exported ONNX graphs.

`vision.xai.cam` is numpy-only (server side); `targets` and `explain_graph` need torch (export
side). Nothing is imported here, so the server can import `vision.xai.cam` without torch.
"""
