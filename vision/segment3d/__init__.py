"""Volumetric segmentation recipes (MONAI 3D networks): train, export, evaluate through ONNX."""
