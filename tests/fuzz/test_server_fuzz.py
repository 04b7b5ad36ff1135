"""A short seeded fuzz run through a real server: no input gets INTERNAL, UNKNOWN or a hang.

vision.v1 Detect / Segment / Explain (encoded images, DICOM objects, raw pixels, thresholds,
explain options), KServe ModelInfer and v2 REST infer; a hypothesis pool of structured cases,
then seeded mutants of it (`tests/fuzz/run.py`). `FUZZ_INPUTS` sets the count (default 5000);
the 10^5-input run is `python -m bench.fuzz`.
"""

from __future__ import annotations

import os

from tests.fuzz.run import inputs, pool, send_all
from tests.fuzz.targets import Clients, small_png

SEED = 18
TOTAL = int(os.environ.get("FUZZ_INPUTS", "5000"))
POOL = min(200, TOTAL)


def test_no_input_gets_internal_unknown_or_a_hang(clients: Clients) -> None:
    assert clients.send("image", small_png(), "bright").status == "OK"  # the server serves
    tally = send_all(clients, inputs(TOTAL, pool(POOL, SEED), SEED))
    statuses = tally.by_status()
    assert tally.total == TOTAL
    assert tally.failed() == 0, (statuses, [(c[0], s, m) for c, s, m in tally.failures])
    assert tally.leaked == 0
    assert statuses["INVALID_ARGUMENT"] > 0 and statuses["OK"] > 0  # it reached both sides
    assert clients.send("image", small_png(), "bright").status == "OK"  # and still serves
