"""Top-level test configuration."""

import os

# The tritonclient suite runs only through tests/serving/test_kserve_wire.py, in a process of
# its own (tritonclient and our protos both define protobuf package `inference`).
collect_ignore = (
    [] if os.environ.get("VISION_TRITONCLIENT_SUITE") == "1" else ["tritonclient_suite"]
)
