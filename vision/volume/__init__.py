"""Volumes: DICOM series / NIfTI / raw to a `Volume`, resampling, sliding-window inference.

Torch-free and MONAI-free: the serving path runs it; MONAI is the reference in the tests.
"""
