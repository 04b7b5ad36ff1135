"""Segmentation models: MONAI networks, training, evaluation and export."""
