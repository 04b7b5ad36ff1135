"""Serving benchmarks: our server against in-process ONNX Runtime and the alternatives."""
