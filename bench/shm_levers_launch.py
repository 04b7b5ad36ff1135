"""`python -m app serve` with one latency lever changed, for bench/shm_levers.py only.

    BENCH_LEVER=threaded|inline|switch python bench/shm_levers_launch.py serve ...

- `threaded`: every batch on the inference thread (what the server does by default).
- `fast-inline`: `batching.inline_max_ms = 1` for every model (lone requests of shapes that ran
  in at most 1 ms run on the event loop: the opt-in setting).
- `inline`: every batch on the event-loop thread once the model's median compute is known,
  whatever its size or cost.
- `switch`: `sys.setswitchinterval(0.0005)` (Python's default is 5 ms).

The levers change the server in this process only.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving import batcher  # noqa: E402 - after the path above

LEVER = os.environ.get("BENCH_LEVER", "")


def _always_inline(self: batcher.DynamicBatcher, batch: list) -> bool:
    return self.compute_estimate_s > 0


def _fast_inline() -> None:
    plain_init = batcher.DynamicBatcher.__init__

    def init(self, model, spec, *args, **kwargs) -> None:
        plain_init(self, model, dataclasses.replace(spec, inline_max_ms=1.0), *args, **kwargs)

    batcher.DynamicBatcher.__init__ = init


def main() -> int:
    """Apply the lever, then run the `vision` command line."""
    if LEVER == "switch":
        sys.setswitchinterval(0.0005)
    elif LEVER == "threaded":
        pass  # the default
    elif LEVER == "fast-inline":
        _fast_inline()
    elif LEVER == "inline":
        batcher.DynamicBatcher._runs_inline = _always_inline
    elif LEVER:
        raise SystemExit(f"unknown BENCH_LEVER {LEVER!r}: threaded, fast-inline, inline, switch")
    from app.cli import main as vision_main

    return vision_main()


if __name__ == "__main__":
    sys.exit(main())
