"""The paired synthetic-data experiment: the same small network trained without and with
synthetic rare-class images, scored on real held-out images only.

Above detection, segmentation and synthesis (it trains the first two with the third's images).
`vision.synth_eval.cli.synth_eval(argv)` is the `vision synth-eval` command.
"""
