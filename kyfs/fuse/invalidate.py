"""Telling the kernel to forget what it caches of a path (attributes and pages), through
libfuse3's high-level ``fuse_invalidate_path(struct fuse *, const char *path)``
(FUSE_3.1; mfusepy does not wrap it, so it is called through ctypes).

Needed where one change shows under several paths the kernel caches apart: libfuse's
high-level API gives every name its own kernel inode, so after a write, link or unlink
through one name of a hard-linked node the kernel still holds the other names' old size,
times and link count for up to attr_timeout.

Calls go through one worker thread: libfuse warns that a notification sent from inside
a request for a related inode can deadlock the kernel against the request it serves.
The adapter waits briefly (WAIT seconds) for the worker, so in the usual case the cache
is gone when the request returns, and never blocks longer.

Thread-safety: ``invalidate`` may be called from any thread.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)
WAIT = 0.05  # seconds a request waits for its invalidations


class Invalidator:
    """Invalidates mount paths (``/<workspace>/<key>``) in the kernel's caches; does
    nothing until :meth:`start` is called from inside a FUSE request (libfuse's init)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[bytes, threading.Event] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._call: Any = None  # the ctypes function, once found
        self._fuse: int | None = None

    def start(self) -> None:
        """Find the ``struct fuse`` of this mount (fuse_get_context) and start the worker.
        Without libfuse3's fuse_invalidate_path this stays a no-op."""
        from kyfs.fuse.binding import mfusepy

        lib = mfusepy._libfuse
        call = getattr(lib, "fuse_invalidate_path", None)
        context = lib.fuse_get_context()
        if call is None or not context:
            log.info("fuse_invalidate_path is not available: caches expire by timeout only")
            return
        call.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        call.restype = ctypes.c_int
        self._call, self._fuse = call, context.contents.fuse
        self._thread = threading.Thread(target=self._run, name="kyfs-invalidate", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._call is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            path, done = item
            result = self._call(self._fuse, path)
            if result not in (0, -2):  # -ENOENT: the kernel holds nothing of it
                log.debug("fuse_invalidate_path(%r) = %d", path, result)
            done.set()

    def invalidate(self, paths: Iterable[str], wait: float = WAIT) -> None:
        """Drop the kernel's cached attributes and pages of ``paths``; waits up to ``wait``
        seconds for it to be done."""
        if self._thread is None:
            return
        last = None
        for path in paths:
            last = threading.Event()
            self._queue.put((os.fsencode(path), last))
        if last is not None:
            last.wait(wait)

    def stop(self) -> None:
        """End the worker (at unmount)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=1.0)
            self._thread = None
