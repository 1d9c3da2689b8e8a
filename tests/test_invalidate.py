"""The invalidation worker's timing, with libfuse's calls replaced by a recorder: which
calls reach the kernel and when. (Whether the kernel then forgets is checked through a
real mount in test_view_access and test_mount.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from kyfs.fuse import invalidate


class Recorder:
    """Stands in for libfuse: remembers (time.monotonic(), path) of each entry call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, bytes]] = []

    def entry(self, session: object, parent: int, name: bytes, size: int) -> int:
        self.calls.append((time.monotonic(), name))
        return 0

    def path(self, fuse: object, path: bytes) -> int:
        self.calls.append((time.monotonic(), path))
        return 0


@pytest.fixture
def worker() -> Iterator[tuple[invalidate.Invalidator, Recorder]]:
    recorder = Recorder()
    inv = invalidate.Invalidator()
    # what start() finds in libfuse, set by hand: no mount here
    inv._call, inv._call_entry, inv._session = recorder.path, recorder.entry, 1
    inv._thread = threading.Thread(target=inv._run, daemon=True)
    inv._thread.start()
    yield inv, recorder
    inv.stop()


def test_a_later_reply_is_never_covered_by_an_earlier_call(
    worker: tuple[invalidate.Invalidator, Recorder],
) -> None:
    """A second lookup while a call is waiting gets a call of its own, SOON after it: the
    first call, due before the second reply reaches the kernel, would leave that reply
    cached for every user."""
    inv, recorder = worker
    inv.invalidate_soon(".search", entry=True)
    time.sleep(invalidate.SOON * 0.8)
    second = time.monotonic()
    inv.invalidate_soon(".search", entry=True)
    time.sleep(invalidate.SOON * 3)
    assert [t for t, _ in recorder.calls if t >= second + invalidate.SOON], recorder.calls


def calls_after(recorder: Recorder, count: int, within: float) -> list[float]:
    """Wait up to ``within`` seconds for ``count`` calls, then a little for any more; the
    times of the calls."""
    deadline = time.monotonic() + within
    while len(recorder.calls) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(invalidate.SOON * 2)  # one too many would come about now
    return [t for t, _ in recorder.calls]


def test_each_reply_is_dropped_again_later(
    worker: tuple[invalidate.Invalidator, Recorder],
) -> None:
    """A reply a loaded machine delayed past the first call is dropped AGAIN s later, and
    once more LATE s later (one delayed past the second call too)."""
    inv, recorder = worker
    asked = time.monotonic()
    inv.invalidate_soon(".search", entry=True)
    times = [t - asked for t in calls_after(recorder, 3, invalidate.SOON + invalidate.LATE + 2)]
    assert len(times) == 3, times
    assert times[0] >= invalidate.SOON
    assert times[1] >= invalidate.SOON + invalidate.AGAIN
    assert times[2] >= invalidate.SOON + invalidate.LATE
    assert {name for _, name in recorder.calls} == {b".search"}


def test_a_burst_of_lookups_makes_few_calls(
    worker: tuple[invalidate.Invalidator, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ls -l of a big result: 100 lookups within a few ms make a handful of calls, not 300.
    LATE is shortened here to keep it quick; the real schedule is checked on a fake clock
    (test_calls_due_about_the_same_time_are_made_once)."""
    monkeypatch.setattr(invalidate, "LATE", invalidate.AGAIN + 0.2)
    inv, recorder = worker
    for _ in range(100):
        inv.invalidate_soon(".search", entry=True)
    times = calls_after(recorder, 3, invalidate.SOON + invalidate.LATE + 2)
    assert 3 <= len(times) <= 6, times


class Clock:
    """time.monotonic() that moves only when told (seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_calls_due_about_the_same_time_are_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """What invalidate_soon schedules, on a clock of the test's own (no worker runs): a
    call due within SOON/2 of one already waiting is not added; any other is."""
    clock = Clock()
    monkeypatch.setattr(invalidate.time, "monotonic", clock)
    inv = invalidate.Invalidator()
    inv._call_entry = object()  # as start() leaves it with libfuse's entry call at hand
    inv._thread = threading.Thread(target=lambda: None)  # "started": nothing reads the queue
    soon, again, late = invalidate.SOON, invalidate.AGAIN, invalidate.LATE

    def due() -> list[float]:
        return sorted(round(when - 1000.0, 3) for when, _, _ in inv._later)

    inv.invalidate_soon(".search", entry=True)
    assert due() == [soon, soon + again, soon + late]
    clock.now += soon / 4  # within SOON/2 of all three: nothing new
    inv.invalidate_soon(".search", entry=True)
    assert due() == [soon, soon + again, soon + late]
    clock.now = 1000.0 + late - again  # its AGAIN call is due with the first one's LATE call
    inv.invalidate_soon(".search", entry=True)
    second = [late - again + soon, late + soon, 2 * late - again + soon]
    assert due() == sorted([soon, soon + again, soon + late, second[0], second[2]])
    pending = sorted(round(when - 1000.0, 3) for when in inv._pending[(b".search", True)])
    assert pending == due()  # what is waiting, per path: what the worker pops from
    inv.invalidate_soon("other", entry=True)  # another path has calls of its own
    assert len(inv._later) == 5 + 3
