"""The write buffer of an open file: close-to-open consistency in bounded memory.

Writes through the mount are not sent to SQLite one by one. Every handle open
on the same entry shares one :class:`OpenFile`, which keeps the changed blocks
(of the store's ``block_size``) and the new size; ``commit`` writes them to the
store in one transaction at flush, fsync or release. Readers through the same
mount see the buffered bytes at once (as on a local filesystem); other
processes using the database (the CLI) see them when close returns.

Memory stays bounded whatever the file size and however many files are open: an open
file holds at most MEMORY_BLOCKS changed blocks in memory, and all open files together
at most the daemon's BUDGET (MEMORY_BUDGET bytes by default; ``write_buffer_mib`` in
config.toml); older blocks, and new ones once the budget is spent, spill to an anonymous
temporary file in kyfs.platform.paths.spill_dir() (same disk as the data). Memory given
back returns to the system as files close (kyfs.platform.memory.trim, every TRIM_EVERY
bytes). Unchanged blocks are never loaded whole: reads of them go to the store at the
offset asked for.

Thread-safety: an OpenFile has none of its own (the FUSE adapter calls it under its
workspace's lock); the MemoryBudget all of them share has a lock.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, Protocol

from kyfs.core.blocks import Changes
from kyfs.core.errors import InvalidInput, KyfsError, NoMoreData, NotSupported
from kyfs.core.nodes import Entry, check_size
from kyfs.platform import memory
from kyfs.platform.paths import make_private_dir

MEMORY_BLOCKS = 4  # changed blocks kept in memory per open file (4 x 64 KiB = 256 KiB)
MEMORY_BUDGET = 256 * 1024 * 1024  # bytes of changed blocks all open files keep in memory
TRIM_EVERY = 32 * 1024 * 1024  # bytes given back between two returns to the system
# fallocate(2)'s mode bits (linux/falloc.h)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
ZEROS_PIECE = 1024 * 1024  # bytes of zeros written at a time into an orphaned file's buffer


class MemoryBudget:
    """The cap on changed blocks all open files keep in memory together (a daemon has
    one, BUDGET); a block that finds it spent goes to its file's spill file at once.

    Thread-safety: a lock guards the count; OpenFiles of several workspaces call it from
    several request threads.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit  # bytes
        self.used = 0  # bytes
        self._freed = 0  # bytes given back since the last trim
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes in memory when they fit under the limit."""
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            return True

    def give(self, size: int) -> None:
        """``size`` bytes left memory; every TRIM_EVERY bytes, freed memory goes back to
        the system."""
        if not size:
            return
        with self._lock:
            self.used -= size
            self._freed += size
            due = self._freed >= TRIM_EVERY
            if due:
                self._freed = 0
        if due:
            memory.trim()


BUDGET = MemoryBudget(MEMORY_BUDGET)


class BlockStore(Protocol):
    """What an OpenFile needs from a store (kyfs.engine.sqlite.workspace.Store provides it)."""

    block_size: int

    @property
    def lock(self) -> AbstractContextManager[Any]:
        """The workspace's re-entrant lock (held by the adapter around every call)."""
        ...

    def read(self, entry_id: int, offset: int, size: int, valid: int | None = None) -> bytes: ...

    def commit(
        self,
        entry_id: int,
        *,
        size: int,
        valid: int,
        changes: Changes,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        pid: int | None = None,
        holes: Sequence[tuple[int, int]] = (),
    ) -> bool: ...

    def sync(self) -> None: ...

    def stat_id(self, entry_id: int) -> Entry | None: ...

    def next_data(self, node_id: int, offset: int) -> int | None: ...

    def next_hole(self, node_id: int, offset: int) -> int: ...

    def keys_of(self, node_id: int) -> list[str]: ...

    def delete(self, key: str) -> Entry: ...

    def empty_refused(self, key: str) -> str | None: ...


class OpenFile:
    """Buffered state of one open value, shared by all handles on it.

    Args:
        store: the workspace's store.
        entry_id: the entry's row id (kept across renames while open).
        size: the stored size in bytes when the file was opened.
        spill_dir: where to create the spill file if one is needed.

    Attributes:
        refs: how many handles use it (the adapter counts).
        size: the current length in bytes, buffered changes included.
        dirty: there are changes not yet committed.
        attrs: attributes set while dirty (``mode``, ``uid``, ``gid``, ``atime_ns``,
            ``mtime_ns``), committed in the same transaction as the data (:meth:`defer`);
            ``ctime_ns`` there is only shown (the commit sets the ctime to its own time).
    """

    def __init__(self, store: BlockStore, entry_id: int, size: int, spill_dir: Path) -> None:
        self.store = store
        self.entry_id = entry_id
        self.size = size
        self.valid = size  # stored bytes below this offset are still part of the value
        self.dirty = False
        self.orphaned = False  # the entry was deleted while open: keep everything here
        self.entry: Entry | None = None  # the entry as last opened, for fstat after unlink
        self.workspace = ""  # the workspace it was opened in (the adapter's, for invalidation)
        self.created_empty = False  # created by this open and not written since (rules)
        # The node was made by this open and nothing was committed since (a flush, a
        # close): the store holds what the open left (nothing), so the first change
        # reads nothing back.
        self.fresh = False
        self.attrs: dict[str, int] = {}  # set while dirty, committed with the data (defer)
        self.pid: int | None = None  # who opened it last: its closes coalesce in history
        self.refs = 0
        self._bs = store.block_size
        self._spill_dir = spill_dir
        self.budget = BUDGET  # the daemon's cap on what open files keep in memory
        self._mem: OrderedDict[int, bytearray] = OrderedDict()
        self._spilled: dict[int, tuple[int, int]] = {}  # block -> (slot, length)
        self._spill: IO[bytes] | None = None
        self._next_slot = 0

    # --- reading ------------------------------------------------------------------------
    def current_size(self) -> int:
        """The length in bytes as a reader sees it now (buffered changes included)."""
        if self.dirty or self.orphaned:
            return self.size
        entry = self.store.stat_id(self.entry_id)
        return entry.size if entry is not None else self.size

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``, buffered changes included; b"" past the end."""
        if not self.dirty:  # nothing buffered: what is stored now, even if the CLI changed it
            return self.store.read(self.entry_id, offset, size)
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        out = bytearray()
        pos = offset
        while pos < end:
            idx, within = divmod(pos, self._bs)
            take = min(end - pos, self._bs - within)
            block = self._buffered(idx)
            if block is None:
                out += self.store.read(self.entry_id, pos, take, valid=self.valid)
            else:
                piece = block[within : within + take]
                out += piece
                out += bytes(take - len(piece))  # a short block: the rest is zeros
            pos += take
        return bytes(out)

    def buffered_bytes(self) -> int:
        """Bytes of the changed blocks this file buffers (whole blocks: at most
        ``block_size`` more than their data)."""
        return (len(self._mem) + len(self._spilled)) * self._bs

    def seek(self, offset: int, whence: int) -> int:
        """lseek(2)'s SEEK_DATA (the first byte at or after ``offset`` that is data) and
        SEEK_HOLE (the first that is a hole; the end of the file counts as one): from
        the value's stored blocks. A file with buffered writes (or unlinked while open)
        is all data, as lseek(2) allows ("the whole file as data"): its buffer is not
        committed for a seek. SEEK_SET and SEEK_END as lseek(2) (libfuse's kernel side
        answers them itself).

        Raises:
            NoMoreData: (ENXIO) ``offset`` at or past the end, or SEEK_DATA where only a
                hole follows.
            InvalidInput: (EINVAL) a negative ``offset``, another ``whence``.
        """
        size = self.current_size()
        if whence == os.SEEK_SET and offset >= 0:
            return offset
        if whence == os.SEEK_END and size + offset >= 0:
            return size + offset
        if whence not in (os.SEEK_DATA, os.SEEK_HOLE) or offset < 0:
            raise InvalidInput(f"lseek: offset {offset}, whence {whence}")
        if offset >= size:
            raise NoMoreData(f"lseek: offset {offset} is at or past the end ({size})")
        if self.dirty or self.orphaned:
            return offset if whence == os.SEEK_DATA else size
        node = self.store.stat_id(self.entry_id)
        if node is not None and node.stored >= size:  # no hole (cp asks of every file):
            return offset if whence == os.SEEK_DATA else size  # one row, not every extent
        if whence == os.SEEK_HOLE:
            return min(self.store.next_hole(self.entry_id, offset), size)
        found = self.store.next_data(self.entry_id, offset)
        if found is None or found >= size:
            raise NoMoreData(f"lseek: no data after {offset}")
        return found

    def _buffered(self, idx: int) -> bytearray | None:
        block = self._mem.get(idx)
        if block is not None:
            return block
        spilled = self._spilled.get(idx)
        if spilled is None:
            return None
        assert self._spill is not None
        slot, length = spilled
        return bytearray(os.pread(self._spill.fileno(), length, slot * self._bs))

    # --- changing ------------------------------------------------------------------------
    def _begin(self) -> None:
        """Before the first change since the last commit: start from what is stored now
        (not read for a ``fresh`` node: its empty value, made by this open)."""
        if not self.dirty and not self.orphaned and not self.fresh:
            entry = self.store.stat_id(self.entry_id)
            if entry is not None:
                self.size = self.valid = entry.size

    def write(self, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` (past the end leaves a hole of zeros); returns len(data).

        Raises:
            ValueTooLarge: (EFBIG) the value would pass kyfs.engine.sqlite.workspace.MAX_VALUE_SIZE.
        """
        end = offset + len(data)
        check_size(end)
        self._begin()
        pos = 0
        while pos < len(data):
            idx, within = divmod(offset + pos, self._bs)
            take = min(len(data) - pos, self._bs - within)
            block = self._load(idx, whole=within == 0 and take == self._bs)
            if len(block) < within:
                block += bytes(within - len(block))
            block[within : within + take] = data[pos : pos + take]
            self._keep(idx, block)
            pos += take
        self.size = max(self.size, end)
        self.dirty = True
        self.attrs.pop("mtime_ns", None)  # written after a utimensat(2): mtime is the write's
        return len(data)

    def _load(self, idx: int, whole: bool) -> bytearray:
        """The block to change: buffered, else from the store (unless it is all overwritten)."""
        block = self._buffered(idx)
        if block is not None:
            return block
        start = idx * self._bs
        if whole or start >= self.valid:
            return bytearray()
        length = min(self._bs, self.valid - start, max(self.size - start, 0))
        return bytearray(self.store.read(self.entry_id, start, length, valid=self.valid))

    def _keep(self, idx: int, block: bytearray) -> None:
        """Put a changed block back; evict the oldest to the spill file first if memory is full.

        If the spill file cannot take it (ENOSPC), nothing changes and the
        error propagates, so the write fails whole and no block is lost.
        """
        if idx in self._spilled:
            self._write_slot(idx, block)
            return
        if idx not in self._mem:
            if len(self._mem) >= MEMORY_BLOCKS:  # this file's share: its oldest block goes
                old_idx, old_block = next(iter(self._mem.items()))
                self._write_slot(old_idx, old_block)
                del self._mem[old_idx]
            elif not self.budget.take(self._bs):  # every file's share is spent
                self._write_slot(idx, block)
                return
        self._mem[idx] = block
        self._mem.move_to_end(idx)

    def _write_slot(self, idx: int, block: bytearray) -> None:
        if self._spill is None:
            make_private_dir(self._spill_dir)
            # Closed in close(); a with-block cannot span the file's open lifetime.
            self._spill = tempfile.TemporaryFile(dir=self._spill_dir, prefix="kyfs-spill-")  # noqa: SIM115
        if idx in self._spilled:
            slot = self._spilled[idx][0]
        else:
            slot, self._next_slot = self._next_slot, self._next_slot + 1
        os.pwrite(self._spill.fileno(), block, slot * self._bs)
        self._spilled[idx] = (slot, len(block))

    def truncate(self, size: int) -> None:
        """Cut to, or grow with zeros to, ``size`` bytes.

        Raises:
            ValueTooLarge: (EFBIG) over kyfs.engine.sqlite.workspace.MAX_VALUE_SIZE.
        """
        check_size(size)
        self._begin()
        if size < self.size:
            cut_idx, cut_len = divmod(size, self._bs)
            for idx in [i for i in (*self._mem, *self._spilled) if i >= cut_idx]:
                block = self._buffered(idx)
                if self._mem.pop(idx, None) is not None:
                    self.budget.give(self._bs)
                self._spilled.pop(idx, None)
                if idx == cut_idx and cut_len and block is not None:
                    self._keep(idx, block[:cut_len])
            self.valid = min(self.valid, size)
        self.size = size
        self.dirty = True
        self.attrs.pop("mtime_ns", None)

    def allocate(self, mode: int, offset: int, length: int) -> bool:
        """fallocate(2) on bytes ``[offset, offset + length)``; returns True when the
        value changed (committed, with the buffered changes, in one transaction).

        ``mode`` 0 grows the size to ``offset + length`` when that is larger;
        FALLOC_FL_KEEP_SIZE alone changes nothing. Neither reserves storage: the new
        bytes are a hole until written (kyfs stores blocks, compressed and shared, so no
        byte count could be promised ahead; a later write may still meet ENOSPC).
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE makes the range a hole (zeros that
        cost no block) and FALLOC_FL_ZERO_RANGE does the same and, without KEEP_SIZE,
        grows the size as mode 0 does. The buffered writes are committed in the same
        transaction, before the range is freed. If the commit fails, the buffer is kept
        as it was (nothing written and acknowledged is lost: the next flush tries again).
        A file unlinked while open (``orphaned``) changes in its buffer only.

        Raises:
            InvalidInput: (EINVAL) ``offset`` below 0 or ``length`` not above 0.
            ValueTooLarge: (EFBIG) ``offset + length`` over MAX_VALUE_SIZE.
            NotSupported: (EOPNOTSUPP) any other mode bit (FALLOC_FL_COLLAPSE_RANGE,
                FALLOC_FL_INSERT_RANGE, FALLOC_FL_UNSHARE_RANGE), both PUNCH_HOLE and
                ZERO_RANGE, or PUNCH_HOLE without KEEP_SIZE (as tmpfs and ext4 answer).
            NoSpace / StorageError / SchemaViolation: the commit failed (ENOSPC / EIO /
                EINVAL); the buffer is as before.
        """
        if offset < 0 or length <= 0:
            raise InvalidInput(f"fallocate: offset {offset}, length {length}")
        freeing = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)
        known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE
        if (
            mode & ~known
            or freeing == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE
            or (mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE)
        ):
            raise NotSupported(f"fallocate mode {mode:#x} is not supported")
        end = offset + length
        check_size(end)
        self._begin()
        size = self.size if mode & FALLOC_FL_KEEP_SIZE else max(self.size, end)
        holes = [(offset, min(end, size))] if freeing and offset < size else []
        if size == self.size and not holes:
            return False
        if not self.orphaned:
            before = (self.size, self.dirty)
            self.size, self.dirty = size, True
            try:
                if self._store(holes):
                    return True
            except KyfsError:
                self.size, self.dirty = before
                raise
        # unlinked while open: nothing of it is stored any more, the buffer is the file
        self.truncate(size)
        for lo, hi in holes:
            for at in range(lo, hi, ZEROS_PIECE):
                self.write(at, bytes(min(ZEROS_PIECE, hi - at)))
        return True

    # --- committing ----------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        """Bytes per buffered block (kyfs.core.blocks.Changes, what the store's commit
        reads)."""
        return self._bs

    def indexes(self) -> list[int]:
        """The indexes of the changed blocks, ascending (kyfs.core.blocks.Changes)."""
        return sorted((*self._mem, *self._spilled))

    def block(self, idx: int) -> bytes:
        """The bytes of changed block ``idx`` (kyfs.core.blocks.Changes).

        Raises:
            KeyError: block ``idx`` is not changed.
        """
        block = self._buffered(idx)
        if block is None:
            raise KeyError(idx)
        return bytes(block)

    def defer(self, **attrs: int | None) -> bool:
        """Keep attribute changes (``mode``, ``uid``, ``gid``, ``atime_ns``, ``mtime_ns``;
        None leaves one unchanged) for the next commit, when there are buffered changes:
        ``tar x`` and ``cp -a`` set times, owner and mode on each file before closing it,
        and all of it then lands in the one transaction of the close. Returns False, and
        keeps nothing, when there is nothing buffered (the caller stores them now)."""
        if not self.dirty or self.orphaned:
            return False
        self.attrs.update((name, value) for name, value in attrs.items() if value is not None)
        return True

    def commit(self, sync: bool = False) -> bool:
        """Write the buffered changes, and the attributes deferred with them (:meth:`defer`),
        in one transaction; with ``sync`` make them durable. Returns True when it wrote
        changes.

        After it returns the buffers are empty and the store holds the value.
        If the entry was deleted meanwhile (unlinked while open) nothing is
        written and the file becomes ``orphaned``: its handles keep reading and
        writing the buffer, and the value is dropped at the last close.

        An error is final, as Linux drops dirty pages after a failed writeback: the
        buffered changes are dropped, so the key stays as it was, then and at every
        later flush or close (what ``close(2)`` or ``fsync(2)`` returned stays true).

        Raises:
            StorageError / NoSpace / SchemaViolation: (EIO / ENOSPC / EINVAL) nothing was
                written, and the buffered changes are gone.
        """
        wrote = False
        self.fresh = False  # (a flush, a close: changes by others count again from here)
        if self.dirty and not self.orphaned:
            try:
                wrote = self._store()
            except KyfsError:
                self._drop()  # the error is final: nothing of these changes lands later
                raise
            if not wrote:
                return False
        if sync:
            self.store.sync()
        return wrote

    def _store(self, holes: Sequence[tuple[int, int]] = ()) -> bool:
        """Commit the buffered changes (and ``holes``, ranges made holes after them) in
        one transaction; on success the buffer is empty. False, and ``orphaned``, when
        the node is gone. An error leaves the buffer as it is (the caller decides)."""
        self.fresh = False
        committed = self.store.commit(
            self.entry_id, size=self.size, valid=self.valid, changes=self,
            mtime_ns=self.attrs.get("mtime_ns"), atime_ns=self.attrs.get("atime_ns"),
            mode=self.attrs.get("mode"), uid=self.attrs.get("uid"),
            gid=self.attrs.get("gid"), pid=self.pid, holes=holes,
        )  # fmt: skip
        if not committed:
            self.orphaned = True
            return False
        self._drop()
        self.valid = self.size
        return True

    def _drop(self) -> None:
        """Forget the buffered changes: the stored value is what readers see again."""
        self.budget.give(len(self._mem) * self._bs)
        self._mem.clear()
        self._spilled.clear()
        if self._spill is not None:
            self._spill.truncate(0)
        self._next_slot = 0
        self.dirty = False
        self.attrs.clear()

    def close(self) -> None:
        """Free the spill file; buffered changes not committed are dropped."""
        self.budget.give(len(self._mem) * self._bs)
        self._mem.clear()
        self._spilled.clear()
        if self._spill is not None:
            self._spill.close()
            self._spill = None
