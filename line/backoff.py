"""Exponential back-off, capped, that a stop event interrupts."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays `initial_s`, doubled per failed attempt up to `cap_s`; `reset()` after a success."""

    initial_s: float = 0.5
    cap_s: float = 8.0
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        delay = min(self.cap_s, self.initial_s * (2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from `initial_s` (the connection works again)."""
        self.attempt = 0

    def wait(self, stop: threading.Event) -> tuple[int, float]:
        """Sleep the next delay unless `stop` is set first; returns (attempt, delay)."""
        delay = self.next_delay()
        stop.wait(delay)
        return self.attempt, delay
