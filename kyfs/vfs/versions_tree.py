"""``<workspace>/.versions/<key>/<id>-<UTC time>``: every stored version of a key, read-only
(``kyfs history`` through the mount). Hidden from readdir of the workspace, so ``cp -r``,
``grep -r`` and ``diff -r`` never see it. Directories above keys with history are listed
too, so ``ls .versions/conf`` works.

Permissions mirror the real tree, so that the kernel's checks (default_permissions) on a
path through ``.versions`` equal those on the real path: ``.versions`` and each directory
in it show the owner and the read and search bits of the directory they mirror; the
directory of a key's versions is owned as the key and may be listed by those who may read
the key and searched by all who reach it (a version's stat tells what the key's stat
tells); a version file shows the key's owner and the read bits of the version's mode:
the most restrictive mode the name has had since the version was recorded (the history
records the node's mode with each version and every chmod, rename or link onto the name
narrows the older ones: kyfs.engine.sql.history.narrow), so ``echo secret > f; chmod 600
f`` leaves the secret's version 0400 too. Versions whose file is gone, or was replaced
by a newer file, a directory or a symbolic link (the file at the name now was created
after the version), belong to the daemon's own user, 0400 (their directories 0500): what
a removed or replaced private file held never becomes readable to others. The owner is
the key's now: a chown hands its versions over, as chown of a git repository does.

Thread-safety: a tree is made per request under its workspace's lock (kyfs.fuse.adapter).
"""

from __future__ import annotations

import stat as st
import time
from typing import Any

from kyfs.core import access, names
from kyfs.core.access import Caller
from kyfs.core.errors import InvalidInput, KeyNotFound
from kyfs.core.nodes import Entry, HistoryEntry
from kyfs.engine.base import Workspace
from kyfs.vfs import acls
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

    def _entry(self, key: str) -> Entry | None:
        """The entry at ``key`` now, or None."""
        try:
            return acls.stat_for_views(self.workspace, key)  # an ACL narrows the view
        except (KeyNotFound, InvalidInput):
            return None

    def _dir_view(self, key: str) -> tuple[tuple[int, int] | None, int]:
        """Owner (None: the daemon's own user) and mode of ``.versions/KEY`` as a
        directory: the directory ``key`` it mirrors, or, for a key, the directory of its
        versions; the daemon's own, 0500, when nothing but a symbolic link or a special
        node is at ``key``."""
        entry = self._entry(key)
        if entry is None or entry.kind == st.S_IFLNK or entry.is_special:
            return None, 0o500
        if entry.is_dir:
            return (entry.uid, entry.gid), access.view_of_directory(entry.mode)
        return (entry.uid, entry.gid), access.directory_of_file(entry.mode)

    @staticmethod
    def _file_view(
        entry: Entry | None, version: HistoryEntry
    ) -> tuple[tuple[int, int] | None, int]:
        """Owner (None: the daemon's own user) and mode of a version file of a key whose
        entry now is ``entry``: the key's owner and the read bits of the version's mode
        (the most restrictive since; one not recorded: the key's now), when that file was
        there when the version was made; else (gone, replaced by a newer file, a
        directory or a link) the daemon's own, 0400."""
        if entry is None or entry.kind != st.S_IFREG or entry.created_ns > version.time_ns:
            return None, 0o400
        mode = entry.mode if version.mode is None else version.mode & entry.mode
        return (entry.uid, entry.gid), access.view_of_file(mode)

    def getattr(self, rest: str, caller: Caller | None = None) -> dict[str, Any]:
        """A version file, a key with versions, or a directory above some. ENOENT."""
        if rest:
            version = self._find(rest)
            if version is not None:
                owner, mode = self._file_view(self._entry(rest.rpartition("/")[0]), version)
                return read_only_file(
                    self._path(rest), version.size or 0, version.time_ns, owner, mode
                )
            if not self._versions(rest) and not self.workspace.history_keys(rest + "/"):
                raise KeyNotFound(f"no versions at {rest}")
        owner, mode = self._dir_view(rest)
        return read_only_dir(self._path(rest), None, owner, mode)

    def readdir(self, rest: str, caller: Caller | None = None) -> Listing:
        """The versions of key ``rest``, or the names below directory ``rest``."""
        versions = self._versions(rest) if rest else []
        if versions:
            entry = self._entry(rest)  # once for all its versions
            return [
                (
                    version_name(v),
                    {
                        "st_mode": st.S_IFREG | self._file_view(entry, v)[1],
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
                names.to_os(name),
                {
                    "st_mode": st.S_IFDIR | self._dir_view(prefix + name)[1],
                    "st_ino": virtual_ino(self._path(prefix + name)),
                },
                0,
            )
            for name in sorted(below)
            if name
        ]

    def readlink(self, rest: str, caller: Caller | None = None) -> str:
        """No links here: EINVAL."""
        raise InvalidInput("not a symbolic link")

    def content(self, rest: str, caller: Caller | None = None) -> bytes:
        """One version's value."""
        version = self._find(rest)
        if version is None or version.id is None:
            raise KeyNotFound(f"no such version: {rest}")
        return self.workspace.version_value(version.id)
