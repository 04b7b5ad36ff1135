"""Per-client token buckets (`--rate-limit RPS[:BURST]`): one bucket per token name or peer."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_CLIENTS = 10_000  # buckets kept; the least recently seen is forgotten beyond this


@dataclass(frozen=True)
class RateLimit:
    """`rate` requests per second on average, bursts of up to `burst`."""

    rate: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """`RPS` or `RPS:BURST` (burst defaults to max(1, RPS))."""
        rate_text, _, burst_text = text.partition(":")
        try:
            rate = float(rate_text)
            burst = float(burst_text) if burst_text else max(1.0, rate)
        except ValueError:
            raise ValueError(f"rate limit {text!r}: write RPS or RPS:BURST, e.g. 50:100") from None
        if not (math.isfinite(rate) and math.isfinite(burst)) or rate <= 0 or burst < 1:
            raise ValueError(f"rate limit {text!r}: RPS must be > 0 and BURST >= 1")
        return cls(rate, burst)


class RateLimiter:
    """Token buckets keyed by client; `allow` takes one token or says when to retry."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (level, t)
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """0.0 when the request may go on (a token taken), else seconds until one is available."""
        now = self._clock()
        with self._lock:
            level, then = self._buckets.pop(key, (self.limit.burst, now))
            level = min(self.limit.burst, level + (now - then) * self.limit.rate)
            wait = 0.0 if level >= 1.0 else (1.0 - level) / self.limit.rate
            self._buckets[key] = (level - 1.0 if wait == 0.0 else level, now)
            if len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
