"""Domain code: image and DICOM I/O, pre/post-processing, models, training, export.

Never imports grpc; the serving path never imports torch.
"""

__version__ = "0.1.0"
