"""Real-vs-synthetic detector: trained on real and `vision synth` images, exported to ONNX,
evaluated per generator; checking images with it is torch-free.

`vision.synth_detect.cli.synth_detect(argv)` is the `vision synth-detect` command.
"""
