"""Series assembly: received instances grouped per calling AE, study and series until complete.

A series is complete after `NodeSettings.idle_for(calling_ae)` seconds without a new instance
(the MONAI Deploy Informatics Gateway's per-AE timeout: archives send a study in bursts), or,
with `complete_on_release`, when the association that sent it is released, whichever comes
first. A late instance of a completed series opens a new run (`Series.run` + 1) holding every
instance of the series received so far, never only the late ones: completed series are
remembered for `history_s` (24 h by default), and `recover(..., completed=...)` hands them back
after a restart. A re-sent SOP instance replaces its earlier copy and never counts twice.

Thread-safe: pynetdicom's association threads and STOW-RS add instances concurrently. The
completion callback runs on the thread that completed the series (the timer's, the owner's
`tick()`, or the releasing association's), one call at a time and outside the state lock, so it
may call `add`; keep it short (queue the job). Logs name counts and AE titles, never a UID.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dicom_node.model import NodeSettings, Series, SpooledInstance

logger = logging.getLogger(__name__)

SeriesKey = tuple[str, str, str]  # calling AE, study, series
DEFAULT_HISTORY_S = 24 * 3600.0
_PRUNE_EVERY_S = 60.0


@dataclass
class _Open:
    """A series still receiving instances."""

    instances: dict[str, SpooledInstance]  # by SOP Instance UID, in the order received
    last_at: float
    run: int
    associations: set[object] = field(default_factory=set)


@dataclass
class _Done:
    """A completed series, kept so that a late instance opens a complete new run."""

    instances: dict[str, SpooledInstance]
    run: int
    completed_at: float


def _key(instance: SpooledInstance) -> SeriesKey:
    return (instance.calling_ae, instance.study_uid, instance.series_uid)


class SeriesAssembler:
    """Groups instances into series and calls `on_complete(series)` once per completed run."""

    def __init__(
        self,
        settings: NodeSettings,
        on_complete: Callable[[Series], None],
        clock: Callable[[], float] = time.monotonic,
        *,
        history_s: float = DEFAULT_HISTORY_S,
        tick_s: float = 0.25,
    ) -> None:
        """`clock` gives seconds (monotonic); `tick_s` is the timer thread's period."""
        self._settings = settings
        self._on_complete = on_complete
        self._clock = clock
        self._history_s = history_s
        self._tick_s = tick_s
        self._lock = threading.Lock()
        self._fire_lock = threading.RLock()  # callbacks one at a time, in completion order
        self._open: dict[SeriesKey, _Open] = {}
        self._done: dict[SeriesKey, _Done] = {}
        self._pruned_at = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, instance: SpooledInstance, association: object | None = None) -> bool:
        """Take a spooled instance; False when it re-sends an instance already held.

        `association` (any hashable id) lets `released` complete only that association's series.
        """
        key = _key(instance)
        sop = instance.sop_instance_uid
        with self._lock:
            now = self._clock()
            series = self._open.get(key)
            if series is None:
                done = self._done.get(key)
                if done is not None and sop in done.instances:
                    done.instances[sop] = instance  # the newest copy on disk
                    return False
                series = self._reopen(key, done, now)
            new = sop not in series.instances
            series.instances[sop] = instance
            series.last_at = now
            if association is not None:
                series.associations.add(association)
            return new

    def _reopen(self, key: SeriesKey, done: _Done | None, now: float) -> _Open:
        """Open a series: run 0, or the next run holding every instance of the earlier ones."""
        if done is None:
            series = _Open({}, now, 0)
        else:
            series = _Open(dict(done.instances), now, done.run + 1)
            logger.info(
                "late instance from %s: series reopened as run %d (%d instances so far)",
                key[0],
                series.run,
                len(series.instances),
            )
        self._open[key] = series
        return series

    def released(self, calling_ae: str, association: object | None = None) -> list[Series]:
        """The association from `calling_ae` was released: complete what it sent (if set so).

        With `association` None, every open series from `calling_ae` completes.
        """
        if not self._settings.complete_on_release:
            return []
        with self._fire_lock:
            with self._lock:
                keys = [
                    key
                    for key, series in self._open.items()
                    if key[0] == calling_ae
                    and (association is None or association in series.associations)
                ]
                completed = [self._complete(key, "release") for key in keys]
            self._fire(completed)
        return completed

    def tick(self) -> list[Series]:
        """Complete and hand over every series idle for its calling AE's idle time."""
        with self._fire_lock:
            with self._lock:
                now = self._clock()
                keys = [
                    key
                    for key, series in self._open.items()
                    if now - series.last_at >= self._settings.idle_for(key[0])
                ]
                completed = [self._complete(key, "idle") for key in keys]
                self._prune(now)
            self._fire(completed)
        return completed

    def _complete(self, key: SeriesKey, why: str) -> Series:
        """Close an open series (lock held) and remember it as done."""
        series = self._open.pop(key)
        self._done[key] = _Done(dict(series.instances), series.run, self._clock())
        logger.debug(
            "series complete (%s): %d instances from %s, run %d",
            why,
            len(series.instances),
            key[0],
            series.run,
        )
        return Series(
            study_uid=key[1],
            series_uid=key[2],
            calling_ae=key[0],
            instances=list(series.instances.values()),
            run=series.run,
        )

    def _prune(self, now: float) -> None:
        """Forget completed series older than the history (lock held), once a minute."""
        if now - self._pruned_at < min(_PRUNE_EVERY_S, self._history_s):
            return
        self._pruned_at = now
        old = [k for k, d in self._done.items() if now - d.completed_at > self._history_s]
        for key in old:
            del self._done[key]

    def _fire(self, completed: list[Series]) -> None:
        """Call `on_complete` for each series; a failure is logged and never stops the others."""
        for series in completed:
            try:
                self._on_complete(series)
            except Exception as exc:  # the callback's own errors must not stop assembly
                logger.error(
                    "on_complete failed for a series of %d instances from %s (run %d): %s",
                    len(series.instances),
                    series.calling_ae,
                    series.run,
                    type(exc).__name__,
                )

    def recover(
        self, instances: Iterable[SpooledInstance], completed: Iterable[Series] = ()
    ) -> None:
        """After a restart: remember `completed` series, then re-add spooled, unprocessed ones.

        Recovered instances complete after the idle time from now (no association to release);
        one of a series in `completed` opens that series' next run, as a late instance does.
        """
        with self._lock:
            now = self._clock()
            for series in completed:
                held = {i.sop_instance_uid: i for i in series.instances}
                self._done[series.key] = _Done(held, series.run, now)
        count = sum(self.add(instance) for instance in instances)
        if count:
            logger.info("recovered %d spooled instances", count)

    def pending(self) -> int:
        """How many series are still open."""
        with self._lock:
            return len(self._open)

    def start(self) -> None:
        """Run `tick()` every `tick_s` seconds on a background thread until `stop()`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="series-assembler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the timer thread (open series stay open; they are recovered from the spool)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                self.tick()
            except Exception as exc:  # keep the timer alive whatever happens
                logger.error("series assembler tick failed: %s", type(exc).__name__)
