"""``<workspace>/.versions/<key>/<id>-<UTC time>``: every stored version of a key, read-only
(``kyfs history`` through the mount). Hidden from readdir of the workspace, so ``cp -r``,
``grep -r`` and ``diff -r`` never see it. Directories above keys with history are listed
too, so ``ls .versions/conf`` works.

Thread-safety: a tree is made per request under its workspace's lock (kyfs.fuse.adapter).
"""

from __future__ import annotations

import stat as st
import time
from typing import Any

from kyfs.core.errors import InvalidInput, KeyNotFound
from kyfs.core.nodes import HistoryEntry
from kyfs.engine.base import Workspace
from kyfs.vfs.tree import Listing, read_only_dir, read_only_file, virtual_ino

VERSIONS_DIR = ".versions"


def version_name(version: HistoryEntry) -> str:
    """``<id>-<YYYYmmddTHHMMSSZ>`` of one version."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(version.time_ns / 1e9))
    return f"{version.id}-{stamp}"


class VersionsTree:
    """The ``.versions`` tree of one workspace (``name`` is the workspace's name)."""

    def __init__(self, name: str, workspace: Workspace) -> None:
        self.name = name
        self.workspace = workspace

    def _path(self, rest: str) -> str:
        return f"{self.name}/{VERSIONS_DIR}/{rest}"

    def _versions(self, key: str) -> list[HistoryEntry]:
        return [v for v in self.workspace.history(key) if v.size is not None]

    def _find(self, rest: str) -> HistoryEntry | None:
        head, _, last = rest.rpartition("/")
        if not head:
            return None
        for version in self._versions(head):
            if version_name(version) == last:
                return version
        return None

    def getattr(self, rest: str) -> dict[str, Any]:
        """A version file, a key with versions, or a directory above some. ENOENT."""
        if not rest:
            return read_only_dir(self._path(rest))
        version = self._find(rest)
        if version is not None:
            return read_only_file(self._path(rest), version.size or 0, version.time_ns)
        if self._versions(rest) or self.workspace.history_keys(rest + "/"):
            return read_only_dir(self._path(rest))
        raise KeyNotFound(f"no versions at {rest}")

    def readdir(self, rest: str) -> Listing:
        """The versions of key ``rest``, or the names below directory ``rest``."""
        versions = self._versions(rest) if rest else []
        if versions:
            return [
                (
                    version_name(v),
                    {
                        "st_mode": st.S_IFREG | 0o444,
                        "st_ino": virtual_ino(self._path(f"{rest}/{version_name(v)}")),
                    },
                    0,
                )
                for v in versions
            ]
        prefix = rest + "/" if rest else ""
        below = {k[len(prefix) :].split("/", 1)[0] for k in self.workspace.history_keys(prefix)}
        return [
            (
                name,
                {"st_mode": st.S_IFDIR | 0o555, "st_ino": virtual_ino(self._path(prefix + name))},
                0,
            )
            for name in sorted(below)
            if name
        ]

    def readlink(self, rest: str) -> str:
        """No links here: EINVAL."""
        raise InvalidInput("not a symbolic link")

    def content(self, rest: str) -> bytes:
        """One version's value."""
        version = self._find(rest)
        if version is None or version.id is None:
            raise KeyNotFound(f"no such version: {rest}")
        return self.workspace.version_value(version.id)
