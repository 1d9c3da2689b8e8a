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

The kernel keeps names and attributes for entry_timeout and attr_timeout (kyfs.fuse.daemon)
and pages while a file's mtime and size stay the same. Changes made behind the mount (a
CLI command, another daemon on the same data, TTL expiry) are found by
:class:`ChangeWatcher`, which asks every open workspace for the names changed by others
every INTERVAL seconds and invalidates them, so they show through the mount within about
that time whatever the timeouts.

Thread-safety: ``invalidate`` may be called from any thread; a ChangeWatcher runs on a
thread of its own.
"""

from __future__ import annotations

import ctypes
import heapq
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from kyfs.core import names
from kyfs.core.errors import KyfsError

if TYPE_CHECKING:
    from kyfs.engine.base import Engine, Workspace

log = logging.getLogger(__name__)
WAIT = 0.05  # seconds a request waits for its invalidations
LOOK_EVERY = 0.005  # seconds between two looks at whether the mount is still there
SOON = 0.05  # seconds after a reply that invalidate_soon drops what the kernel kept of it
# invalidate_soon sends again this many seconds later: a reply that reached the kernel
# after the first call (a loaded machine delays the thread that makes it) is dropped then.
AGAIN = 0.5
# ...and once more this many seconds after the first call: on a machine loaded enough
# (CI on 2 cores: the reply reached the kernel after the call AGAIN s on) both earlier
# calls can come before the reply, which the kernel would then serve to every user for
# attr_timeout (ATTR_TIMEOUT, 30 s). One more call, still far below that, drops it.
LATE = 2.5
_WAKE = (b"", False, threading.Event())  # wakes the worker to look at what is due
# Seconds the kernel keeps names and attributes (the mount's entry_timeout and
# attr_timeout, kyfs.fuse.daemon.BASE_OPTIONS): how long an invalidated name is held.
ATTR_TIMEOUT = 30.0
ROOT_ID = 1  # the mount root's node id (FUSE_ROOT_ID, fuse_lowlevel.h)


class Invalidator:
    """Invalidates mount paths (``/<workspace>/<key>``) in the kernel's caches; does
    nothing until :meth:`start` is called from inside a FUSE request (libfuse's init)."""

    def __init__(self, hold_s: float = ATTR_TIMEOUT) -> None:
        self._hold_s = hold_s
        self._recent: dict[str, float] = {}  # path -> time.monotonic() of invalidation
        self._recent_lock = threading.Lock()  # requests and the watcher share _recent
        self._queue: queue.SimpleQueue[tuple[bytes, bool, threading.Event] | None] = (
            queue.SimpleQueue()
        )
        self._later: list[tuple[float, bytes, bool]] = []  # heap of (due, path, is_entry)
        # what _later holds -> the times it is due at
        self._pending: dict[tuple[bytes, bool], list[float]] = {}
        self._later_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._call: Any = None  # the ctypes function, once found
        self._call_entry: Any = None  # fuse_lowlevel_notify_inval_entry, when at hand
        self._fuse: int | None = None
        self._session: int | None = None
        # True while the mount is still in place (kyfs.fuse.daemon sets it); see _ended
        self.mounted: Callable[[], bool] | None = None
        self._gone = False
        self._looked = 0.0  # time.monotonic() of the last look at ``mounted``

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
        session = getattr(lib, "fuse_get_session", None)
        entry = getattr(lib, "fuse_lowlevel_notify_inval_entry", None)
        if session is not None and entry is not None:
            session.argtypes, session.restype = [ctypes.c_void_p], ctypes.c_void_p
            entry.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t]
            entry.restype = ctypes.c_int
            self._session, self._call_entry = session(self._fuse), entry
        self._thread = threading.Thread(target=self._run, name="kyfs-invalidate", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """True once started with libfuse's fuse_invalidate_path at hand."""
        return self._thread is not None

    def _due(self) -> tuple[float | None, list[tuple[bytes, bool]]]:
        """What invalidate_soon asked for that is due now (path, is_entry), and seconds
        until the next."""
        now = time.monotonic()
        due = []
        with self._later_lock:
            while self._later and self._later[0][0] <= now:
                when, path, is_entry = heapq.heappop(self._later)
                times = self._pending[(path, is_entry)]
                times.remove(when)
                if not times:
                    del self._pending[(path, is_entry)]
                due.append((path, is_entry))
            wait = self._later[0][0] - now if self._later else None
        return wait, due

    def _ended(self) -> bool:
        """True once the mount is gone: libfuse's loop then ends and fuse_destroy frees its
        table of nodes before it calls the adapter's destroy (which stops this worker),
        and fuse_invalidate_path walks that table: a call then crashed the daemon with
        SIGSEGV. The kernel drops the mount before the loop sees it, so from the first
        look that finds it gone nothing is called. Looks at most every LOOK_EVERY s."""
        if self._gone or self.mounted is None:
            return self._gone
        now = time.monotonic()
        if now - self._looked >= LOOK_EVERY:
            self._looked = now
            self._gone = not self.mounted()
        return self._gone

    def _send(self, path: bytes, is_entry: bool) -> None:
        """Tell the kernel: ``path`` (a name in the mount's root when ``is_entry``,
        FUSE_ROOT_ID 1 in libfuse, with all below it) or a path's attributes and pages."""
        if is_entry:
            result = self._call_entry(self._session, ROOT_ID, path, len(path))
        else:
            result = self._call(self._fuse, path)
        if result not in (0, -2):  # -ENOENT: the kernel holds nothing of it
            log.debug("invalidating %r (entry: %s) = %d", path, is_entry, result)

    def _run(self) -> None:
        assert self._call is not None
        while True:
            wait, due = self._due()
            for path, is_entry in due:
                if self._ended():
                    break
                self._send(path, is_entry)
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            if item is None:
                return
            if item is _WAKE:
                continue
            if self._ended():
                item[2].set()
                continue
            path, is_entry, done = item
            self._send(path, is_entry)
            done.set()

    def invalidate(self, paths: Iterable[str], wait: float = WAIT, hold: bool = False) -> None:
        """Drop the kernel's cached attributes and pages of ``paths``; waits up to ``wait``
        seconds for it to be done. ``hold``: the paths changed behind the kernel's back and
        may be gone while it still holds their names (see :meth:`held`)."""
        if self._thread is None:
            return
        paths = list(paths)
        if hold:
            self._hold(paths)
        last = None
        for path in paths:
            last = threading.Event()
            self._queue.put((os.fsencode(path), False, last))
        if last is not None:
            last.wait(wait)

    def invalidate_soon(self, path: str, delay: float = SOON, entry: bool = False) -> None:
        """Drop what the kernel keeps of ``path`` ``delay`` seconds from now, after the
        reply being made reaches it, and again AGAIN and LATE seconds after that (a reply
        that a loaded machine delayed past the earlier calls): for an answer that depends
        on who asks (a ``/.search`` link), which the kernel would otherwise serve to every
        user for attr_timeout seconds. ``entry``: ``path`` is a name in the mount's root, and the
        kernel drops the name with everything below it (fuse_lowlevel_notify_inval_entry;
        fuse_invalidate_path drops attributes only, and the kernel would still confirm
        the names it holds). A call already waiting to be made as late is not made
        twice; an earlier one never stands in for a later one. Does not wait."""
        if self._thread is None:
            return
        if entry and self._call_entry is None:  # no libfuse entry call: attributes only
            path, entry = "/" + path.lstrip("/"), False
        item = (os.fsencode(path.lstrip("/") if entry else path), entry)
        now = time.monotonic()
        with self._later_lock:
            times = self._pending.setdefault(item, [])
            for when in (now + delay, now + delay + AGAIN, now + delay + LATE):
                if any(when - delay / 2 <= other <= when + delay / 2 for other in times):
                    continue  # one already due about then
                times.append(when)
                heapq.heappush(self._later, (when, *item))
        self._queue.put(_WAKE)

    def forget_workspaces(self, names: Iterable[str]) -> None:
        """Make the kernel drop the names ``names`` in the mount's root, with everything it
        caches below them (fuse_lowlevel_notify_inval_entry: the dentry and its subtree),
        as when a workspace is dropped or renamed behind the mount. fuse_invalidate_path
        cannot do this: it drops attributes and pages, never names, and the kernel would
        go on showing the keys of a dropped workspace for up to entry_timeout. Does not
        wait."""
        if self._thread is None or self._call_entry is None:
            return
        for name in names:
            self._queue.put((os.fsencode(name), True, threading.Event()))

    def _hold(self, paths: list[str]) -> None:
        """Remember ``paths`` as invalidated now; forget those held past ``hold_s``."""
        now = time.monotonic()
        with self._recent_lock:
            for path in paths:
                self._recent.pop(path, None)
                self._recent[path] = now  # the dict stays ordered by time
            while self._recent:
                oldest, since = next(iter(self._recent.items()))
                if since >= now - self._hold_s:
                    break
                del self._recent[oldest]

    def held(self, path: str) -> bool:
        """True, once, when ``path`` was invalidated with ``hold`` within the last
        ``hold_s`` seconds (the mount's attr_timeout) and neither asked about nor removed
        through the mount since: the kernel may still hold the name (fuse_invalidate_path
        drops attributes and pages, not the name). A getattr that finds such a name gone
        answers ESTALE instead of ENOENT: Linux's VFS then walks the path again asking
        the daemon (LOOKUP_REVAL), so an open(O_CREAT) of the name creates it instead of
        failing ENOENT. (A LOOKUP that fails ESTALE while the kernel holds the name makes
        it drop the name and look up again; that is why it must be held: a name removed
        through the mount is :meth:`released`.)"""
        with self._recent_lock:
            return self._recent.pop(path, None) is not None

    def released(self, path: str) -> None:
        """``path`` was removed or renamed through the mount: the kernel knows it is gone."""
        with self._recent_lock:
            self._recent.pop(path, None)

    def stop(self) -> None:
        """End the worker (at unmount)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=1.0)
            self._thread = None


class ChangeWatcher:
    """Invalidates, in the kernel's caches, the names that change behind the mount.

    Every INTERVAL seconds, or at once when the engine is told of a commit elsewhere
    (Engine.wait_for_changes: PostgreSQL's LISTEN/NOTIFY), for each workspace the
    daemon's engine keeps open, it asks the workspace for the names changed since the
    last look by any other connection or by TTL expiry (Workspace.changes) and
    invalidates them and their directories. A
    workspace that disappeared from the data directory (dropped or renamed by the CLI)
    or whose file was replaced (restore) has all its names invalidated. A workspace whose
    lock a request holds is waited for LOCK_WAIT seconds at most, then looked at again
    after MIN_GAP: the watcher never stalls behind a long request.

    Args:
        engine: the daemon's engine (``cache=True``), shared with the request threads:
            a workspace tells its own connection's changes apart, so it must be the
            same object the requests use.
        invalidator: where paths go (started by libfuse's init).
        also: called in each round for each workspace (its name, and the workspace,
            whose lock the watcher holds) for more mount paths to invalidate: those of
            the snapshots deleted behind the mount (kyfs.vfs.snapshots_tree.Shown.gone),
            which history does not record.
    """

    INTERVAL = 0.25  # seconds between two rounds when nobody says a change happened
    MIN_GAP = 0.02  # seconds at least between two rounds (a busy writer notifies often)
    LOCK_WAIT = 0.05  # seconds a round waits for a workspace a request holds; then later

    def __init__(
        self,
        engine: Engine,
        invalidator: Invalidator,
        also: Callable[[str, Workspace], list[str]] | None = None,
    ) -> None:
        self._engine = engine
        self._invalidator = invalidator
        self._also = also
        self._watched: dict[str, tuple[Workspace, int]] = {}  # name -> (workspace, cursor)
        self._names: set[str] | None = None
        self._vanished: list[str] = []  # workspaces the last round found gone
        self._skipped = False  # the last round could not look at a busy workspace
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a daemon thread: it never keeps the process alive)."""
        self._thread = threading.Thread(target=self._run, name="kyfs-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        away = False  # the storage failed the last round (a database server restarting)
        while not self._stop.is_set():
            # Told of a change (PostgreSQL's NOTIFY): look at once, then rest MIN_GAP (a
            # busy writer notifies at every commit); else (SQLite, or nothing changed)
            # look every INTERVAL.
            told = self._engine.wait_for_changes(self.MIN_GAP if self._skipped else self.INTERVAL)
            self._skipped = False
            if self._stop.is_set():
                return
            try:
                paths = self.poll()
                self._invalidator.forget_workspaces(self._vanished)
                self._invalidator.invalidate(paths, wait=0, hold=True)
                if away:
                    log.warning("watching for changes behind the mount again")
                away = False
            except KyfsError as exc:  # said once per outage, tried again every round
                if not away:
                    log.warning("cannot watch for changes behind the mount: %s", exc)
                away = True
            except Exception:  # a round that fails must not end the watching
                log.exception("watching for changes behind the mount")
            if told:
                self._stop.wait(self.MIN_GAP)

    def poll(self) -> list[str]:
        """One round: the mount paths (``/<workspace>/<key>``, ``/<workspace>``, ``/``)
        whose kernel caches must go."""
        paths: list[str] = []
        names = set(self._engine.names())
        # Gone since the last round, or opened by a request and gone before any round saw
        # it (a workspace made and dropped by the CLI within one INTERVAL).
        vanished = set(self._engine.cached()) - names
        if self._names is not None:
            vanished |= self._names - names
        self._vanished = sorted(vanished)
        if self._names is not None and names != self._names:
            paths.append("/")
            for name in sorted(self._names ^ names):
                paths.append(f"/{name}")
        self._names = names
        for name in [name for name in self._watched if name not in names]:
            gone, _ = self._watched.pop(name)
            paths += self._every_path(name, gone)
        with self._engine.shared():
            for name in self._engine.cached():
                try:
                    paths += self._look(name)
                except KyfsError as exc:  # dropped meanwhile, unreadable: next round
                    log.debug("watching %s: %s", name, exc)
        return paths

    def _look(self, name: str) -> list[str]:
        """The paths changed in workspace ``name`` since the last round."""
        store = self._engine.open(name)  # notices a replaced file; sweeps expired keys
        if not store.lock.acquire(timeout=self.LOCK_WAIT):
            self._skipped = True  # look again after MIN_GAP, not INTERVAL
            return []
        try:
            before = self._watched.get(name)
            if before is not None and before[0] is store:
                cursor, keys = store.changes(before[1])
                paths = _with_parents(name, keys)
            else:
                cursor, _ = store.changes(None)
                paths = []
                if before is not None:  # the file was replaced: everything may differ
                    paths = self._every_path(name, before[0]) + self._every_path(name, store)
            if self._also is not None:
                paths += self._also(name, store)
        finally:
            store.lock.release()
        self._watched[name] = (store, cursor)
        return paths

    @staticmethod
    def _every_path(name: str, store: Workspace) -> list[str]:
        """``/<name>`` and every path of ``store``'s keys; only ``/<name>`` when the store
        can no longer be read (closed, or its file gone)."""
        try:
            with store.lock:
                keys = store.keys()
        except KyfsError:
            keys = []
        return [f"/{name}", *_with_parents(name, keys)]

    def stop(self) -> None:
        """Stop the thread and wait for its round (at unmount)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _with_parents(workspace: str, keys: Iterable[str]) -> list[str]:
    """``/<workspace>/<key>`` of each key, then of each directory above it, once each."""
    paths = dict.fromkeys(f"/{workspace}/{names.to_os(key)}" for key in keys)
    for path in list(paths):
        parent = path.rpartition("/")[0]
        while parent.count("/") >= 1 and parent not in paths:
            paths[parent] = None
            parent = parent.rpartition("/")[0]
    return list(paths)
