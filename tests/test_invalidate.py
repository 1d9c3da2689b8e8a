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


def test_each_reply_is_dropped_again_later(
    worker: tuple[invalidate.Invalidator, Recorder],
) -> None:
    """A reply a loaded machine delayed past the first call is dropped AGAIN s later."""
    inv, recorder = worker
    asked = time.monotonic()
    inv.invalidate_soon(".search", entry=True)
    time.sleep(invalidate.SOON + invalidate.AGAIN + 0.2)
    times = [t - asked for t, name in recorder.calls if name == b".search"]
    assert len(times) == 2, times
    assert times[0] >= invalidate.SOON and times[1] >= invalidate.SOON + invalidate.AGAIN


def test_a_burst_of_lookups_makes_few_calls(
    worker: tuple[invalidate.Invalidator, Recorder],
) -> None:
    """ls -l of a big result: 100 lookups within a few ms make a handful of calls, not 200."""
    inv, recorder = worker
    for _ in range(100):
        inv.invalidate_soon(".search", entry=True)
    time.sleep(invalidate.SOON + invalidate.AGAIN + 0.2)
    assert 2 <= len(recorder.calls) <= 4, recorder.calls
