"""One log line for every failure the mount answers for the storage: EIO and its kin.

The adapter's error boundary (kyfs.fuse.adapter._boundary) hands this module every
StorageError it turns into an errno (EIO, and ENOSPC or EROFS from the disk), every
other KyfsError answered with EIO, and every exception that is no KyfsError or OSError
(a sqlite3 error that escaped the engine, a bug), which the mount answers with EIO. Each
gets one line naming the workspace, the key, the operation, the errno and the cause::

    workspace default: key a/b: read answered EIO: storage error: database disk image is malformed

at WARNING (the daemon logs WARNING and up by default, kyfs.platform.service), or at
ERROR with the traceback for an unexpected exception.

Flooding: a damaged value read by ``cat`` fails every read request, and a program that
retries fails thousands of times. One line per (workspace, key, cause) goes out every
WINDOW_S seconds; the repeats in between are counted, and the next line that goes out
for it says how many were not logged. Repeats that stop inside the window are not
reported afterwards (no timer thread): the line before them stands for them. At most
KEEP causes are remembered; past that the oldest are forgotten (and would log again).

Thread-safety: :meth:`EioLog.report` may be called from any of libfuse's threads at once
(one lock around the table of causes).
"""

from __future__ import annotations

import errno as _errno
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from kyfs.core.errors import KyfsError

log = logging.getLogger("kyfs.fuse.adapter")  # the adapter's lines, under its name

WINDOW_S = 10.0  # seconds: at most one line per (workspace, key, cause) in this time
KEEP = 1024  # causes remembered for the rate limit (the oldest go first)


class EioLog:
    """Rate-limited log lines for the errors the mount answers.

    Args:
        window_s: seconds between two lines of one (workspace, key, cause).
        keep: how many causes are remembered at most.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        window_s: float = WINDOW_S,
        keep: int = KEEP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.keep = keep
        self._clock = clock
        self._lock = threading.Lock()
        # (workspace, key, cause) -> [time of its last line, repeats not logged since]
        self._seen: OrderedDict[tuple[str, str, str], list[float]] = OrderedDict()

    def _admit(self, what: tuple[str, str, str]) -> int | None:
        """None when a line for ``what`` went out less than window_s ago (this one is
        counted); else how many were not logged since the last line."""
        now = self._clock()
        with self._lock:
            seen = self._seen.get(what)
            if seen is not None and now - seen[0] < self.window_s:
                seen[1] += 1
                return None
            suppressed = int(seen[1]) if seen is not None else 0
            self._seen[what] = [now, 0]
            self._seen.move_to_end(what)
            while len(self._seen) > self.keep:
                self._seen.popitem(last=False)
            return suppressed

    def report(
        self, operation: str, workspace: str, key: str, error_number: int, exc: BaseException
    ) -> bool:
        """Log that ``operation`` on ``key`` of ``workspace`` answered ``error_number``
        because of ``exc``: WARNING for a KyfsError, ERROR with the traceback for any
        other exception. Returns False when the line was held back by the rate limit.

        ``workspace`` and ``key`` may be "" (the mount's root, a workspace's top)."""
        expected = isinstance(exc, KyfsError)
        cause = str(exc) if expected else f"{type(exc).__name__}: {exc}"
        suppressed = self._admit((workspace, key, cause))
        if suppressed is None:
            return False
        name = _errno.errorcode.get(error_number, str(error_number))
        more = (
            f" ({suppressed} more like it in the last {self.window_s:.0f} s not logged)"
            if suppressed
            else ""
        )
        where = f"workspace {workspace or '(root)'}: key {key or '(top)'}"
        if expected:
            log.warning("%s: %s answered %s: %s%s", where, operation, name, cause, more)
        else:
            log.error("%s: %s answered %s: %s%s", where, operation, name, cause, more, exc_info=exc)
        return True
