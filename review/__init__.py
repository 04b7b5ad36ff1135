"""The review tool: radiologists and inspectors review, correct and export what the models found.

An integration beside `line/` and `dicom_node/`: it imports `serving` and `vision`, never the
reverse, and is mounted on the server's HTTP app at `/review/` by the composition root.
"""
