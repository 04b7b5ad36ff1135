"""Object detection: data readers, a small anchor-free detector, training, export and evaluation.

Torch is imported only by the training-side modules; `metrics` is numpy-only.
"""
