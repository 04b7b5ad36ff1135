"""`python -m app serve` with one latency lever changed, for bench/shm_levers.py only.

    BENCH_LEVER=threaded|inline|switch python bench/shm_levers_launch.py serve ...

- `threaded`: every batch on the inference thread (`INLINE_MAX_S = 0`, the server before it ran
  lone fast requests on the event loop).
- `inline`: every batch on the event-loop thread once the model's median compute is known,
  whatever its size or cost.
- `switch`: `sys.setswitchinterval(0.0005)` (Python's default is 5 ms).

The server as shipped runs a lone request on the loop when its shape ran in at most
`serving.batcher.INLINE_MAX_S`; the levers change that, in this process only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving import batcher  # noqa: E402 - after the path above

LEVER = os.environ.get("BENCH_LEVER", "")


def _always_inline(self: batcher.DynamicBatcher, batch: list) -> bool:
    return self.compute_estimate_s > 0


def main() -> int:
    """Apply the lever, then run the `vision` command line."""
    if LEVER == "switch":
        sys.setswitchinterval(0.0005)
    elif LEVER == "threaded":
        batcher.INLINE_MAX_S = 0.0
    elif LEVER == "inline":
        batcher.DynamicBatcher._runs_inline = _always_inline
    elif LEVER:
        raise SystemExit(f"unknown BENCH_LEVER {LEVER!r}; use threaded, inline or switch")
    from app.cli import main as vision_main

    return vision_main()


if __name__ == "__main__":
    sys.exit(main())
