"""Series assembly: idle time per calling AE, release, late instances, duplicates, recovery,
threads. A fake clock stands in for time: no test sleeps for an idle timeout."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from dicom_node.assembly import SeriesAssembler
from dicom_node.model import NodeSettings, Series, SpooledInstance


class FakeClock:
    """Seconds that move only when a test says so (thread-safe enough: floats, one writer)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def instance(
    sop: str, series: str = "1.2.3.1", ae: str = "PACS", study: str = "1.2.3", path: str = ""
) -> SpooledInstance:
    return SpooledInstance(
        path=Path(path or f"/spool/{sop}.dcm"),
        study_uid=study,
        series_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.5.1",
        calling_ae=ae,
        received_at=0.0,
    )


class Recorder:
    def __init__(self) -> None:
        self.series: list[Series] = []
        self.lock = threading.Lock()

    def __call__(self, series: Series) -> None:
        with self.lock:
            self.series.append(series)

    def sops(self, index: int = -1) -> list[str]:
        return [i.sop_instance_uid for i in self.series[index].instances]


def make(
    **settings: object,
) -> tuple[SeriesAssembler, Recorder, FakeClock]:
    clock, recorder = FakeClock(), Recorder()
    defaults: dict[str, object] = {"series_idle_s": 10.0}
    assembler = SeriesAssembler(NodeSettings(**{**defaults, **settings}), recorder, clock=clock)
    return assembler, recorder, clock


def test_series_completes_after_the_idle_time_since_its_last_instance():
    assembler, done, clock = make()
    for sop in ("a", "b", "c"):
        assert assembler.add(instance(sop))
        clock.advance(4)  # each instance restarts the idle time
    assert assembler.tick() == [] and done.series == []
    clock.advance(5.9)  # 9.9 s since the last instance
    assert assembler.tick() == []
    clock.advance(0.1)
    completed = assembler.tick()
    assert completed == done.series and len(done.series) == 1
    series = done.series[0]
    assert series.key == ("PACS", "1.2.3", "1.2.3.1")
    assert done.sops() == ["a", "b", "c"] and series.run == 0
    clock.advance(100)
    assert assembler.tick() == [] and len(done.series) == 1  # once
    assert assembler.pending() == 0


def test_idle_time_is_per_calling_ae():
    assembler, done, clock = make(idle_by_calling_ae={"ARCHIVE": 60.0})
    assembler.add(instance("fast-1", ae="MODALITY"))
    assembler.add(instance("slow-1", ae="ARCHIVE"))
    clock.advance(10)
    assembler.tick()
    assert [s.calling_ae for s in done.series] == ["MODALITY"]
    clock.advance(49)
    assembler.tick()
    assert len(done.series) == 1
    clock.advance(1)
    assembler.tick()
    assert [s.calling_ae for s in done.series] == ["MODALITY", "ARCHIVE"]


def test_series_are_grouped_by_calling_ae_study_and_series():
    assembler, done, clock = make()
    assembler.add(instance("a", series="s1"))
    assembler.add(instance("b", series="s2"))
    assembler.add(instance("c", series="s1", ae="OTHER"))
    assembler.add(instance("d", series="s1", study="other-study"))
    assembler.add(instance("e", series="s1"))
    clock.advance(10)
    assembler.tick()
    by_key = {s.key: [i.sop_instance_uid for i in s.instances] for s in done.series}
    assert by_key == {
        ("PACS", "1.2.3", "s1"): ["a", "e"],
        ("PACS", "1.2.3", "s2"): ["b"],
        ("OTHER", "1.2.3", "s1"): ["c"],
        ("PACS", "other-study", "s1"): ["d"],
    }


def test_release_completes_the_calling_aes_series_at_once_and_only_once():
    assembler, done, clock = make()
    assembler.add(instance("a", series="s1"))
    assembler.add(instance("b", series="s2"))
    assembler.add(instance("c", series="s3", ae="OTHER"))
    completed = assembler.released("PACS")
    assert (
        sorted(s.series_uid for s in completed)
        == ["s1", "s2"]
        == sorted(s.series_uid for s in done.series)
    )
    clock.advance(10)
    assembler.tick()
    assert [s.series_uid for s in done.series[2:]] == ["s3"]  # s1, s2 not again


def test_release_of_one_association_completes_only_what_it_sent():
    assembler, done, _ = make()
    assembler.add(instance("a", series="s1"), association=1)
    assembler.add(instance("b", series="s2"), association=2)
    assembler.released("PACS", association=1)
    assert [s.series_uid for s in done.series] == ["s1"]
    assert assembler.pending() == 1


def test_release_does_nothing_unless_complete_on_release():
    assembler, done, clock = make(complete_on_release=False)
    assembler.add(instance("a"))
    assert assembler.released("PACS") == [] and done.series == []
    clock.advance(10)
    assembler.tick()
    assert len(done.series) == 1


def test_a_late_instance_starts_a_new_complete_run():
    assembler, done, clock = make()
    assembler.add(instance("a"))
    assembler.add(instance("b"))
    assembler.released("PACS")
    assert done.sops(0) == ["a", "b"] and done.series[0].run == 0
    clock.advance(3600)
    assembler.tick()
    assert assembler.add(instance("c"))  # late: the series was processed an hour ago
    assert assembler.tick() == []  # not partial, not at once: after its idle time
    clock.advance(10)
    assembler.tick()
    assert done.sops(1) == ["a", "b", "c"] and done.series[1].run == 1
    assembler.add(instance("d"))
    assembler.released("PACS")
    assert done.sops(2) == ["a", "b", "c", "d"] and done.series[2].run == 2


def test_duplicates_never_duplicate():
    assembler, done, clock = make()
    assert assembler.add(instance("a"))
    assert not assembler.add(instance("a", path="/spool/a-again.dcm"))
    assert assembler.add(instance("b"))
    clock.advance(10)
    assembler.tick()
    assert done.sops() == ["a", "b"]
    assert done.series[0].instances[0].path == Path("/spool/a-again.dcm")  # the newest copy
    # the whole series re-sent after it was processed: nothing new, no new run
    assert not assembler.add(instance("a"))
    assert not assembler.add(instance("b", path="/spool/b-again.dcm"))
    clock.advance(10)
    assert assembler.tick() == [] and assembler.pending() == 0
    assembler.add(instance("c"))  # a new one: run 1 with the newest copies
    assembler.released("PACS")
    assert done.sops() == ["a", "b", "c"] and done.series[-1].run == 1
    assert done.series[-1].instances[1].path == Path("/spool/b-again.dcm")


def test_recovery_completes_spooled_instances_after_the_idle_time():
    assembler, done, clock = make()
    assembler.recover([instance("a"), instance("b"), instance("a"), instance("x", series="s9")])
    assert assembler.pending() == 2
    clock.advance(9)
    assert assembler.tick() == []
    clock.advance(1)
    assembler.tick()
    by_series = {s.series_uid: [i.sop_instance_uid for i in s.instances] for s in done.series}
    assert by_series == {"1.2.3.1": ["a", "b"], "s9": ["x"]}


def test_recovery_with_completed_series_keeps_later_runs_complete():
    assembler, done, clock = make()
    processed = Series("1.2.3", "1.2.3.1", "PACS", [instance("a"), instance("b")], run=0)
    assembler.recover([instance("c")], completed=[processed])
    clock.advance(10)
    assembler.tick()
    assert done.sops() == ["a", "b", "c"] and done.series[0].run == 1
    assembler.recover([instance("a")], completed=[])  # already processed: nothing to do
    clock.advance(10)
    assert assembler.tick() == []


def test_history_is_kept_for_a_bounded_time():
    clock, done = FakeClock(), Recorder()
    assembler = SeriesAssembler(NodeSettings(), done, clock=clock, history_s=100.0)
    assembler.add(instance("a"))
    assembler.released("PACS")
    clock.advance(50)
    assembler.tick()
    assembler.add(instance("b"))  # within the history: run 1 with a and b
    assembler.released("PACS")
    assert done.sops() == ["a", "b"] and done.series[-1].run == 1
    clock.advance(101)
    assembler.tick()  # forgets the series
    assembler.add(instance("c"))
    assembler.released("PACS")
    assert done.sops() == ["c"] and done.series[-1].run == 0


def test_a_failing_callback_is_logged_without_uids_and_stops_nothing(caplog):
    calls: list[Series] = []

    def on_complete(series: Series) -> None:
        calls.append(series)
        if len(calls) == 1:
            raise RuntimeError(f"boom {series.study_uid}")

    clock = FakeClock()
    assembler = SeriesAssembler(NodeSettings(), on_complete, clock=clock)
    assembler.add(instance("a", series="s1"))
    assembler.add(instance("b", series="s2"))
    clock.advance(10)
    with caplog.at_level(logging.DEBUG, logger="dicom_node.assembly"):
        assert len(assembler.tick()) == 2
    assert len(calls) == 2
    assert "on_complete failed for a series of 1 instances from PACS (run 0): RuntimeError" in (
        caplog.text
    )
    for uid in ("1.2.3", "s1", "s2"):
        assert uid not in caplog.text.replace("dicom_node.assembly", "")


def test_the_callback_may_add_instances():
    clock = FakeClock()
    seen: list[Series] = []

    def on_complete(series: Series) -> None:
        seen.append(series)
        if len(seen) == 1:
            assembler.add(instance("late"))

    assembler = SeriesAssembler(NodeSettings(), on_complete, clock=clock)
    assembler.add(instance("a"))
    assembler.released("PACS")
    assembler.released("PACS")
    assert [len(s.instances) for s in seen] == [1, 2]


def test_many_threads_adding_lose_and_duplicate_nothing():
    assembler, done, clock = make()
    threads, per_thread, series_count = 8, 200, 5
    start = threading.Barrier(threads + 1)

    def sender(t: int) -> None:
        start.wait()
        for n in range(per_thread):
            sop = f"{t}.{n % 150}"  # each thread re-sends 50 of its instances
            assembler.add(instance(sop, series=f"s{n % series_count}", ae=f"AE{t % 2}"))

    workers = [threading.Thread(target=sender, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    while any(w.is_alive() for w in workers):
        assembler.tick()  # idle time not reached: completes nothing
        assembler.released("NOBODY")
    for w in workers:
        w.join()
    assert done.series == []
    clock.advance(10)
    assembler.tick()
    assert len(done.series) == 2 * series_count  # two calling AEs
    received = [i.sop_instance_uid for s in done.series for i in s.instances]
    assert len(received) == len(set(received)) == threads * 150


def test_timer_thread_ticks():
    clock, fired = FakeClock(), threading.Event()
    assembler = SeriesAssembler(
        NodeSettings(complete_on_release=False), lambda s: fired.set(), clock=clock, tick_s=0.01
    )
    assembler.start()
    try:
        assembler.add(instance("a"))
        clock.advance(10)
        assert fired.wait(10), "the timer thread never completed the series"
    finally:
        assembler.stop()
    assert assembler.pending() == 0


@pytest.mark.parametrize("complete_on_release", [True, False])
def test_whichever_comes_first(complete_on_release):
    assembler, done, clock = make(complete_on_release=complete_on_release)
    assembler.add(instance("a"))
    clock.advance(10)
    assembler.tick()  # idle first
    assembler.released("PACS")
    assert len(done.series) == 1
