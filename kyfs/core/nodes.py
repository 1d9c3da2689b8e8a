"""What a workspace holds, as plain values: nodes, the names (entries) that point at them,
versions, archived entries and search matches. No I/O; safe from any thread.

A *node* is an inode: a regular file (a key with a value), a directory, a symbolic link
or a special node (a FIFO, a UNIX socket, a character or block device: a name and
attributes only, whose I/O the kernel does, never kyfs), with a type, permission bits,
an owner (uid, gid), a link count and times. An *entry* is one name of a node: its key,
the path inside the workspace. A regular file or a special node may have several names
(hard links, link(2)); a directory and a symbolic link have one.
Keys stay what users see: ``kyfs get a/b`` reads the node named ``a/b``.

Times are integer nanoseconds since the Unix epoch, UTC. Sizes are bytes.
"""

from __future__ import annotations

import stat as st
from typing import NamedTuple

from kyfs.core import names
from kyfs.core.errors import InvalidInput, ValueTooLarge

REG = st.S_IFREG  # node types, as in st_mode (stat(2))
DIR = st.S_IFDIR
LNK = st.S_IFLNK
FIFO = st.S_IFIFO  # special nodes (mknod(2)): the kernel does their I/O, kyfs their names
SOCK = st.S_IFSOCK
CHR = st.S_IFCHR
BLK = st.S_IFBLK
SPECIAL = frozenset({FIFO, SOCK, CHR, BLK})
KINDS = frozenset({REG, DIR, LNK, *SPECIAL})  # every node type a workspace stores
KIND_NAMES = {
    REG: "key",
    DIR: "directory",
    LNK: "symlink",
    FIFO: "fifo",
    SOCK: "socket",
    CHR: "character device",
    BLK: "block device",
}
MAX_RDEV = 2**32 - 1  # a device number: FUSE carries rdev as 32 bits (fuse_attr, fuse_mknod_in)

FILE_MODE = 0o644  # permission bits of a key made without a mode (kyfs set)
DIR_MODE = 0o755
LINK_MODE = 0o777  # symbolic links always have 0777 on Linux (symlink(7))
MODE_MASK = 0o7777  # permission bits plus setuid, setgid and sticky
MAX_VALUE_SIZE = 16 * 1024**3  # bytes; a larger value is refused with EFBIG
ROOT = ""  # the key of the workspace's own top directory


class Entry(NamedTuple):
    """One name and the node it points at.

    Attributes:
        id: the node's id, stable for its life, across renames, links and remounts;
            unique within the workspace (the mount derives st_ino from it).
        key: the name: its full key within the workspace (``""`` for the top directory).
        kind: REG, DIR, LNK or one of SPECIAL (the S_IFMT bits of st_mode).
        mode: permission bits (``0o7777`` mask), without the type.
        size: value length in bytes (a symlink: its target's length; 0 for directories).
        created_ns, mtime_ns, ctime_ns, atime_ns: ns since the epoch, UTC.
        uid, gid: the owner, as numbers.
        nlink: the number of names (a directory: 2 + its subdirectories, as POSIX).
        rdev: a device node's device number (st_rdev, dev_t as Linux encodes it); 0 for
            every other node.
        stored: bytes of the value the block store holds (its holes cost none; a block
            shared with another value counted here too): what st_blocks shows.
    """

    id: int
    key: str
    kind: int
    mode: int
    size: int
    created_ns: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    rdev: int = 0
    stored: int = 0

    @property
    def is_dir(self) -> bool:
        """A directory."""
        return self.kind == DIR

    @property
    def is_symlink(self) -> bool:
        """A symbolic link."""
        return self.kind == LNK

    @property
    def is_special(self) -> bool:
        """A FIFO, socket or device node: no value, no history; its I/O is the kernel's."""
        return self.kind in SPECIAL

    @property
    def name(self) -> str:
        """The last component of the key."""
        return self.key.rpartition(names.SEP)[2]


class Owner(NamedTuple):
    """Who creates a node: the caller's uid and gid (the FUSE request's, or the CLI's
    process's)."""

    uid: int
    gid: int


class ImportItem(NamedTuple):
    """A key to import: its value (bytes), and optionally its mode, times and expiry
    (ns since the epoch, UTC; an expiry keeps the key's TTL)."""

    key: str
    value: bytes
    mode: int | None = None
    created_ns: int | None = None
    mtime_ns: int | None = None
    expires_ns: int | None = None


class HistoryEntry(NamedTuple):
    """One recorded change of a key: ``action`` is "set", "delete", "rename", "link" or
    "symlink"; ``size`` is the length in bytes of the value it keeps (a version: "set",
    or "rename" to this key), None when it keeps none; ``detail`` says more (the other
    name of a rename or link, a link's target, "expired", "restored ..."); ``id`` is the
    stable version number (Workspace.version_value reads the value); ``mode`` the
    permission bits a version is shown with: its node's when recorded, narrowed by every
    mode its name has had since (kyfs.engine.sql.history.narrow), None when not known."""

    key: str
    action: str
    size: int | None
    time_ns: int
    detail: str | None = None
    id: int | None = None
    mode: int | None = None


class ImportVersion(NamedTuple):
    """A change to import into a key's history (e.g. from KyCLI's audit log): ``value``
    is the value it set, None for one that holds none (a delete); ``time_ns`` ns since
    the epoch, UTC; ``source`` where it came from (kyfs.core.actor: "kycli")."""

    key: str
    action: str
    value: bytes | None
    time_ns: int
    source: str | None = None


class Change(NamedTuple):
    """One change of a key as ``kyfs log`` and ``kyfs watch`` show it (a history row,
    kyfs.engine.sql.history): ``id`` its history id (ascending in commit order within
    one SQLite workspace), ``time_ns`` when (ns UTC), ``action`` (set, delete, rename,
    link, symlink, mknod), ``key``, ``size`` bytes of the value it keeps (None: none),
    ``detail`` (the other name of a rename, "expired", ...), and who (kyfs.core.actor):
    ``source`` (cli, mount, api, mcp, kycli), ``user``, and for the mount the calling
    process's ``pid`` and command name ``comm``; None where not known (rows recorded
    before kyfs kept them)."""

    id: int
    time_ns: int
    action: str
    key: str
    size: int | None
    detail: str | None
    source: str | None
    user: str | None
    pid: int | None
    comm: str | None


class Match(NamedTuple):
    """One full-text match in a workspace.

    Attributes:
        key: the matching key.
        text: the value's indexed text (None when binary, too long, or not asked for).
        length: the document's length in tokens (key and value), for scoring.
        snippet: a short extract, matches between MARK_START and MARK_END.
        bm25: SQLite FTS5's bm25 within this workspace (lower is better).
    """

    key: str
    text: str | None
    length: int
    snippet: str
    bm25: float


MARK_START, MARK_END = "\x02", "\x03"  # around matches in snippets


class Archived(NamedTuple):
    """A deleted key or directory waiting in the archive: the entry as it was, and when
    it was deleted (``deleted_ns``, nanoseconds since the epoch, UTC)."""

    entry: Entry
    deleted_ns: int


def check_size(size: int) -> None:
    """Raise ValueTooLarge (EFBIG, exit 2) when ``size`` bytes is over MAX_VALUE_SIZE, and
    InvalidInput (EINVAL, exit 2) when it is negative."""
    if size > MAX_VALUE_SIZE:
        raise ValueTooLarge(f"value of {size} bytes is over the limit of {MAX_VALUE_SIZE} bytes")
    if size < 0:
        raise InvalidInput(f"negative size {size}")
