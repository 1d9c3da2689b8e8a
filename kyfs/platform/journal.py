"""Journals of multi-step operations, so that one killed midway (kill -9, power loss) is
rolled forward or back by the next kyfs command instead of leaving half a result or
gigabytes of copies behind.

An operation works in a folder of its own, ``<data dir>/ops/KIND.ID/`` (on the data's
disk, so its staged files move into place with one rename), that holds:

- ``journal.json``: the operation's kind and whatever its owner needs to finish or undo
  it (paths, names, which steps are done), replaced atomically at each :meth:`Operation.save`
  (temporary file, fsync, rename, fsync of the folder: a journal is never half written);
- ``lock``: held with ``flock(LOCK_EX)`` for the operation's life. The kernel lets go of
  it when the process dies, however it dies, so a lock that can be taken marks an
  operation whose owner is gone (flock(2); a pid would be reused);
- its staged files (snapshots, extracted archives, copies about to be adopted).

The folder is made under a ``new.`` name and renamed once its lock is held, so a
recovering process never mistakes an operation being born for a dead one. Its owner
removes the folder when the operation ends, successfully or not
(:meth:`Operation.close`): renamed ``gone.NAME`` first, so that a kill in the middle of
the deletion (its journal and lock already gone, a snapshot not yet) leaves a folder
recovery knows to delete. :func:`dead` finds the folders of killed owners, for the
recovery code of each kind (kyfs.transfer.recovery, kyfs.engine.sqlite.engine's moves).

Thread-safety: an Operation belongs to one thread; :func:`dead` may run anywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kyfs.platform import paths

JOURNAL = "journal.json"
LOCK = "lock"
BIRTH_S = 60.0  # seconds a "new." folder may take to get its lock before it counts as dead


def ops_dir(data: Path | None = None) -> Path:
    """Where operations keep their folders: ``<data dir>/ops`` (or ``data/ops``)."""
    return (data or paths.data_dir()) / "ops"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Operation:
    """One multi-step operation's folder, journal and lock (see the module docstring).

    Attributes:
        kind: what the operation is (``backup-create``, ``install``, ``move``, ...): its
            recovery code is chosen by it.
        folder: the operation's own folder; staged files go here (:meth:`file`).
        data: the journal's content as last saved or read (JSON-ready values).
    """

    def __init__(self, kind: str, folder: Path, lock_fd: int, data: dict[str, Any]) -> None:
        self.kind = kind
        self.folder = folder
        self.data = data
        self._lock_fd: int | None = lock_fd

    def file(self, name: str) -> Path:
        """A path inside the operation's folder (created by the caller)."""
        return self.folder / name

    def save(self, **changes: Any) -> None:
        """Merge ``changes`` into the journal and write it durably and atomically.

        Raises:
            OSError: the disk refused (ENOSPC and the like); the previous journal stands.
        """
        self.data.update(changes)
        text = json.dumps({"kind": self.kind, **self.data})
        partial = self.folder / (JOURNAL + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, self.folder / JOURNAL)
        _fsync_dir(self.folder)

    def close(self) -> None:
        """The operation is over: its folder (journal and staged files) goes, its lock is
        let go. Safe to call twice."""
        if self._lock_fd is None:
            return
        _remove(self.folder)
        os.close(self._lock_fd)
        self._lock_fd = None

    def release(self) -> None:
        """Let go of the lock and keep the folder: the operation is left for a later
        recovery (one that could not finish it now)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Operation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remove(folder: Path) -> None:
    """Remove an operation's folder so that a kill midway leaves nothing unfound: it is
    renamed ``gone.NAME`` first (one atomic step), then deleted; :func:`dead` deletes
    any ``gone.`` folder it meets (its owner died in the middle, or finishes it anyway)."""
    tomb = folder.with_name(f"gone.{folder.name}")
    try:
        os.rename(folder, tomb)
    except OSError:
        tomb = folder
    shutil.rmtree(tomb, ignore_errors=True)


def begin(kind: str, data: Path | None = None, **journal: Any) -> Operation:
    """Start an operation of ``kind`` with the journal ``journal`` (saved before this
    returns) in ``ops_dir(data)``; use it as a context manager, or call ``close``.

    Raises:
        OSError: the folder could not be made (ENOSPC, EROFS, EACCES).
    """
    top = paths.make_private_dir(ops_dir(data))
    name = f"{kind}.{os.getpid()}.{secrets.token_hex(4)}"
    born = top / f"new.{name}"
    born.mkdir(mode=0o700)
    try:
        fd = os.open(born / LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
    except BaseException:
        shutil.rmtree(born, ignore_errors=True)
        raise
    fcntl.flock(fd, fcntl.LOCK_EX)
    folder = top / name
    try:
        os.rename(born, folder)
        operation = Operation(kind, folder, fd, {})
        operation.save(**journal)
    except BaseException:
        shutil.rmtree(born, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)
        raise
    return operation


def dead(data: Path | None = None, kinds: tuple[str, ...] = ()) -> Iterator[Operation]:
    """The operations in ``ops_dir(data)`` (of ``kinds``, every kind when empty) whose
    owner is gone: their lock is taken here, so no one else recovers them meanwhile. The
    caller finishes or undoes each, then calls ``close``. A folder without a readable
    journal (killed before its first save) is removed here and not yielded; so are
    ``new.`` folders older than BIRTH_S. Cheap when there is nothing: one scandir.
    """
    top = ops_dir(data)
    try:
        entries = list(os.scandir(top))
    except OSError:
        return
    for entry in entries:
        folder = Path(entry.path)
        if entry.name.startswith("gone."):
            shutil.rmtree(folder, ignore_errors=True)
            continue
        if entry.name.startswith("new."):
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > BIRTH_S:
                    shutil.rmtree(folder, ignore_errors=True)
            continue
        kind = entry.name.split(".", 1)[0]
        if kinds and kind not in kinds:
            continue
        try:
            fd = os.open(folder / LOCK, os.O_WRONLY)
        except OSError:  # closed meanwhile, or its lock went: not an operation's any more
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > BIRTH_S:
                    shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # its owner is alive
            continue
        try:
            found = json.loads((folder / JOURNAL).read_text("utf-8"))
            if not isinstance(found, dict):
                raise ValueError("not a journal")
        except (OSError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)
            os.close(fd)
            continue
        found.pop("kind", None)
        yield Operation(kind, folder, fd, found)


def pending(data: Path | None = None) -> bool:
    """True when ``ops_dir(data)`` holds any operation folder (running or dead): the
    cheap test before recovering."""
    return pending_in(ops_dir(data))


def pending_in(folder: Path) -> bool:
    """True when ``folder`` exists and holds anything (one scandir)."""
    try:
        with os.scandir(folder) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def size(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (0 when it is gone): for reports."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
