"""Dataset readers and locations: the bottom layer that detection, segmentation and synthesis
all read from.

Plain numpy readers (no torch): `detection` (Pascal VOC, COCO, YOLO, DeepPCB boxes),
`segmentation` (DRIVE, magnetic-tile, image+mask folders, recorded splits), `locations` (where
each shared dataset lives), `provenance` (the synthetic-image marker every evaluation split is
checked against) and `mixing` (a `vision synth` folder as an extra training source, mixed into
batches at a fixed ratio).
"""
