"""The DICOM node: a PACS sends studies, the node runs the right models, results go back as DICOM.

An integration package: it imports `serving` (the data plane) and `vision` (decoding, results);
nothing imports it but the composition root (`app`).
"""
