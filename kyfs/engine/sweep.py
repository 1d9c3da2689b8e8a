"""Sweeping expired keys as workspaces are opened, the same for every engine.

Thread-safety: one Sweeper per engine, shared by the daemon's threads; the times it keeps
are a dict whose single assignments are atomic under the GIL, and a sweep runs under the
workspace's own lock.
"""

from __future__ import annotations

import logging
import time

from kyfs.core.errors import NoSpace
from kyfs.engine.base import Workspace

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0  # seconds between expiry sweeps of a workspace kept open


class Sweeper:
    """Archives expired keys (Workspace.sweep_expired) at every open, and, for an engine
    that keeps workspaces open (``cached``: the daemon), at most once per SWEEP_INTERVAL
    seconds and only when no other thread holds the workspace: such a workspace is swept
    at a later open (by the daemon's watcher at the latest,
    kyfs.fuse.invalidate.ChangeWatcher), so an open never waits for another thread's
    operation."""

    def __init__(self, cached: bool) -> None:
        self._cached = cached
        self._swept: dict[str, float] = {}  # workspace name -> time.monotonic() of its sweep

    def sweep(self, name: str, workspace: Workspace) -> None:
        """Sweep ``workspace`` (named ``name``) if it is due.

        A full disk leaves expired keys in place (logged): the workspace opens anyway.

        Raises:
            StorageError: (EIO, exit 4) the engine failed.
        """
        now = time.monotonic()
        if self._cached:
            if now - self._swept.get(name, 0.0) < SWEEP_INTERVAL:
                return
            if not workspace.lock.acquire(blocking=False):
                return
        else:
            workspace.lock.acquire()
        try:
            self._swept[name] = now
            workspace.sweep_expired()
        except NoSpace:  # a full disk: the keys stay until a sweep has room
            log.warning("workspace %s: no room to sweep expired keys", name)
        finally:
            workspace.lock.release()
