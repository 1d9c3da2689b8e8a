"""``/.kyfs``: the daemon's own files. Today one, ``/.kyfs/metrics``: the operation
metrics in Prometheus's text format (kyfs.platform.metrics). Hidden from readdir of the
mount's root, so ``find`` and ``grep -r`` never walk it. They belong to the mounting user
(the daemon's uid and gid): the directory 0700, its files 0600, so on a mount shared with
``-o allow_other`` no other user reads them (the kernel checks: default_permissions).

Thread-safety: any of the daemon's threads may read; the cached rendering is replaced whole.
"""

from __future__ import annotations

import time
from typing import Any

from kyfs.core.access import Caller
from kyfs.core.errors import InvalidInput, KeyNotFound
from kyfs.platform.metrics import Metrics
from kyfs.vfs.tree import Listing, read_only_dir, read_only_file

CONTROL_DIR = ".kyfs"
METRICS_FILE = "metrics"
DIR_MODE = 0o700  # the mounting user's only
FILE_MODE = 0o600
METRICS_TTL = 1.0  # seconds one rendering is served, so stat and read agree on its size


class ControlTree:
    """The ``/.kyfs`` tree over the daemon's ``metrics``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._text: tuple[float, bytes] = (0.0, b"")

    def _metrics(self) -> bytes:
        now = time.monotonic()
        if now - self._text[0] > METRICS_TTL:
            self._text = (now, self.metrics.render().encode())
        return self._text[1]

    def getattr(self, rest: str, caller: Caller | None = None) -> dict[str, Any]:
        """The top directory, or the metrics file (its size as rendered now)."""
        if not rest:
            return read_only_dir(CONTROL_DIR, mode=DIR_MODE)
        if rest != METRICS_FILE:
            raise KeyNotFound(f"no such file: {CONTROL_DIR}/{rest}")
        return read_only_file(f"{CONTROL_DIR}/{rest}", len(self._metrics()), mode=FILE_MODE)

    def readdir(self, rest: str, caller: Caller | None = None) -> Listing:
        """The metrics file."""
        if rest:
            raise KeyNotFound(f"no such directory: {CONTROL_DIR}/{rest}")
        return [(METRICS_FILE, self.getattr(METRICS_FILE), 0)]

    def readlink(self, rest: str, caller: Caller | None = None) -> str:
        """No links here: EINVAL."""
        raise InvalidInput("not a symbolic link")

    def content(self, rest: str, caller: Caller | None = None) -> bytes:
        """The metrics text."""
        self.getattr(rest)
        if not rest:
            raise KeyNotFound("a directory")
        return self._metrics()
