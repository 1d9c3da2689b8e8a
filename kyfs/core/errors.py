"""The one error hierarchy of kyfs.

Every error kyfs raises on purpose is a :class:`KyfsError`. Each class carries

* ``errno``: what the FUSE adapter (``kyfs.fuse.adapter``) answers the kernel with, as
  ``FuseOSError(errno)``; the numbers are POSIX's (``errno.h``);
* ``exit_code``: what the CLI (``kyfs.cli``) exits with after printing the
  message on one line to stderr. The codes are listed in docs/exit-codes.md,
  and a test checks that the list and this module agree.

The classes hold no state besides the message, so they are safe to share
between threads.
"""

from __future__ import annotations

import errno as _errno

# Exit codes of the CLI (docs/exit-codes.md). 0 is success; click's own usage
# errors exit 2, which is why bad input shares that code.
EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_STORAGE = 4
EXIT_MOUNT = 5
EXIT_PERMISSION = 6
EXIT_VERSION_CONFLICT = 7  # compare-and-swap lost: read the key again and retry


class KyfsError(Exception):
    """Base class: a failure with a message meant for a person.

    Attributes:
        errno: POSIX errno the mount answers with (default EIO).
        exit_code: the CLI's exit status (default 4, storage error).
    """

    errno: int = _errno.EIO
    exit_code: int = EXIT_STORAGE


# --- not found (exit 1) --------------------------------------------------------------
class NotFound(KyfsError):
    """Something named does not exist (ENOENT, exit 1)."""

    errno = _errno.ENOENT
    exit_code = EXIT_NOT_FOUND


class KeyNotFound(NotFound):
    """The key does not exist in the workspace (ENOENT, exit 1)."""


class NoAttribute(NotFound):
    """The node has no extended attribute of that name (ENODATA, exit 1; getxattr(2))."""

    errno = _errno.ENODATA


class WorkspaceNotFound(NotFound):
    """No workspace has that name (ENOENT, exit 1)."""


class SnapshotNotFound(NotFound):
    """The workspace has no snapshot of that name (ENOENT, exit 1)."""


class StaleName(NotFound):
    """The kernel still holds a name that is gone behind the mount (a key deleted by the
    CLI or another daemon, or expired) and asked to open it (ESTALE, exit 1). On ESTALE
    Linux's VFS walks the path again with LOOKUP_REVAL, which asks the daemon instead of
    its cache (fs/namei.c, retry_estale), so the caller sees ENOENT, or O_CREAT creates."""

    errno = _errno.ESTALE


# --- bad input (exit 2) --------------------------------------------------------------
class InvalidInput(KyfsError):
    """The input breaks a documented rule; nothing was written (EINVAL, exit 2)."""

    errno = _errno.EINVAL
    exit_code = EXIT_USAGE


class InvalidName(InvalidInput):
    """A workspace name or key breaks the naming rules of docs/usage.md (EINVAL, exit 2)."""


class NameTooLong(InvalidName):
    """A key component is over 255 bytes, or a key over 64 KiB (ENAMETOOLONG, exit 2).

    255 is NAME_MAX on Linux (``limits.h``); a whole key stops at 64 KiB (kyfs.core.names).
    """

    errno = _errno.ENAMETOOLONG


class IllegalByteSequence(InvalidName):
    """A name is not valid UTF-8 (EILSEQ, exit 2)."""

    errno = _errno.EILSEQ


class AttributeNameTooLong(InvalidInput):
    """An extended attribute's name is over 255 bytes (ERANGE, exit 2), as ext4 answers
    (XATTR_NAME_MAX, ``linux/limits.h``; setxattr(2))."""

    errno = _errno.ERANGE


class AttributeTooLarge(InvalidInput):
    """An extended attribute's value is over 64 KiB (XATTR_SIZE_MAX) (E2BIG, exit 2;
    setxattr(2))."""

    errno = _errno.E2BIG


class AttributesFull(InvalidInput):
    """A new extended attribute would take a node's names, each with its NUL, past 64 KiB
    (XATTR_LIST_MAX), which listxattr(2) could not answer: ENOSPC, as ext4 and tmpfs
    answer when a node has no room left for attributes (exit 2)."""

    errno = _errno.ENOSPC


class AttributeNotSupported(InvalidInput):
    """An extended attribute namespace kyfs does not store (``system.*``, ``foo.*``), or
    one it does not offer on this kind of node (ENOTSUP, exit 2)."""

    errno = _errno.ENOTSUP


class InvalidQuery(InvalidInput):
    """A search query is not valid FTS5 syntax (with ``--raw``) (EINVAL, exit 2)."""


class MasterKeyRequired(InvalidInput):
    """Encrypted KyCLI data and no (or a wrong) master key (EINVAL, exit 2)."""


class SchemaViolation(InvalidInput):
    """A value breaks a JSON Schema rule of its workspace (EINVAL, exit 2); through the
    mount, fsync and close fail with EINVAL."""


class ValueTooLarge(InvalidInput):
    """A value would grow past the size limit MAX_VALUE_SIZE (EFBIG, exit 2)."""

    errno = _errno.EFBIG


class NotSupported(InvalidInput):
    """A request kyfs does not implement, as tmpfs does not: fallocate(2)'s
    FALLOC_FL_COLLAPSE_RANGE or FALLOC_FL_INSERT_RANGE, a punch without
    FALLOC_FL_KEEP_SIZE (EOPNOTSUPP, exit 2)."""

    errno = _errno.EOPNOTSUPP


class NoMoreData(InvalidInput):
    """lseek(2) with SEEK_DATA or SEEK_HOLE from an offset at or past the end of the
    file, or SEEK_DATA where only a hole follows (ENXIO, exit 2)."""

    errno = _errno.ENXIO


class BadHandle(InvalidInput):
    """An operation on an open-file handle the mount does not hold (EBADF, exit 2):
    closed already, or never opened."""

    errno = _errno.EBADF


class UnsoundInput(InvalidInput):
    """A file from outside (a backup, an adopted workspace) that breaks kyfs's rules: a
    foreign schema, a key such as ``../x``, numbers out of range (EINVAL, exit 2)."""


class CrossWorkspace(InvalidInput):
    """A rename between two workspaces; callers copy instead (EXDEV, exit 2)."""

    errno = _errno.EXDEV


# --- conflicts with what exists (exit 3) ------------------------------------------------
class Conflict(KyfsError):
    """The operation conflicts with what is stored (EEXIST, exit 3)."""

    errno = _errno.EEXIST
    exit_code = EXIT_CONFLICT


class AlreadyExists(Conflict):
    """A workspace, key or directory of that name exists (EEXIST, exit 3)."""


class WorkspaceExists(AlreadyExists):
    """A workspace of that name exists (EEXIST, exit 3)."""


class VersionConflict(Conflict):
    """A compare-and-swap write lost: ``--if-version N`` (``if_version=N``) and the key's
    current version is not N (another writer came first, or the key is gone); nothing
    was written. EAGAIN: read the key again and retry (exit 7, its own code so that a
    script tells a lost race from any other conflict)."""

    errno = _errno.EAGAIN
    exit_code = EXIT_VERSION_CONFLICT


class KeyExists(VersionConflict):
    """A compare-and-swap write lost: ``--if-absent`` (``if_absent=True``) and the key
    exists; nothing was written (EEXIST, as open(2) with O_EXCL; exit 7)."""

    errno = _errno.EEXIST


class NotEmpty(Conflict):
    """A directory or workspace still holds keys (ENOTEMPTY, exit 3)."""

    errno = _errno.ENOTEMPTY


class IsADirectory(Conflict):
    """A key was expected, a directory was found (EISDIR, exit 3)."""

    errno = _errno.EISDIR


class TooManyLinks(Conflict):
    """A node would pass the most names it may have (EMLINK, exit 3)."""

    errno = _errno.EMLINK


class NotADirectory(Conflict):
    """A path goes through a key as if it were a directory (ENOTDIR, exit 3)."""

    errno = _errno.ENOTDIR


# --- permission (exit 6) -----------------------------------------------------------------
class NotPermitted(KyfsError):
    """The operation is never allowed here, e.g. a regular file at the root (EPERM, exit 6)."""

    errno = _errno.EPERM
    exit_code = EXIT_PERMISSION


class PermissionDenied(NotPermitted):
    """The permission bits or the ACL forbid it, e.g. a default ACL on a file (EACCES,
    exit 6)."""

    errno = _errno.EACCES


class ReadOnly(NotPermitted):
    """The place is read-only, e.g. the mount's ``.search`` directory (EROFS, exit 6)."""

    errno = _errno.EROFS


# --- storage (exit 4) ---------------------------------------------------------------------
class StorageError(KyfsError):
    """SQLite or the disk failed; the transaction was rolled back (EIO, exit 4)."""


class UntrustedFile(StorageError):
    """A workspace file whose schema is not exactly kyfs's own (a view, an extra trigger,
    a changed table): refused before any statement uses it (EIO, exit 4)."""


class DamagedBlock(StorageError):
    """A stored block of a value fails its checksum (its bytes do not hash to its
    address, or do not decompress): the value's bytes are not returned (EIO, exit 4);
    ``kyfs fsck`` names the keys that use it."""


class NoSpace(StorageError):
    """The disk that holds the data directory is full (ENOSPC, exit 4)."""

    errno = _errno.ENOSPC


class OutOfInodes(StorageError):
    """No inode number is left (kyfs.core.inodes): every workspace tag of the data
    directory is in use, or a workspace has used every node id below 2**36 (ENOSPC,
    exit 4)."""

    errno = _errno.ENOSPC


class UnusableDatabase(StorageError):
    """A PostgreSQL database kyfs cannot use as it is made: its encoding is not UTF8
    (SQL_ASCII, from an initdb under LC_ALL=C, hands text back as bytes); refused at
    connect, before any statement reads or writes (EIO, exit 4)."""


class ReadOnlyStorage(StorageError):
    """The data directory or a workspace file cannot be written: its file system is
    mounted read-only (EROFS), the process may not write there (EACCES, EPERM), or
    SQLite says "attempt to write a readonly database" (EROFS, exit 4). Nothing was
    written; reads go on where SQLite can read (docs/usage.md, "A read-only data
    directory")."""

    errno = _errno.EROFS


class EmbedderUnavailable(KyfsError):
    """The embedder of semantic search cannot be loaded: its package or model file is
    missing, or a plugged-in factory failed (kyfs.platform.embedders; EIO, exit 4)."""


# --- mount (exit 5) -----------------------------------------------------------------------
class MountError(KyfsError):
    """Mounting or unmounting failed (EIO, exit 5)."""

    exit_code = EXIT_MOUNT


READ_ONLY_ERRNOS = frozenset({_errno.EROFS, _errno.EACCES, _errno.EPERM})


def storage_error(exc: OSError, what: str = "") -> StorageError:
    """The kyfs error for an OSError met on the data directory (``what``: the path or
    thing being done, put before the system's message): NoSpace for ENOSPC and EDQUOT,
    ReadOnlyStorage for EROFS, EACCES and EPERM, else StorageError."""
    where = what or (str(exc.filename) if exc.filename else "")
    message = f"{where}: {exc.strerror or exc}" if where else str(exc.strerror or exc)
    if exc.errno in (_errno.ENOSPC, _errno.EDQUOT):
        return NoSpace(f"disk full: {message}")
    if exc.errno in READ_ONLY_ERRNOS:
        return ReadOnlyStorage(f"cannot write the data directory: {message}")
    return StorageError(message)


def all_error_classes() -> list[type[KyfsError]]:
    """Every class of the hierarchy, KyfsError first, in definition order (for docs tests)."""
    found: list[type[KyfsError]] = [KyfsError]
    index = 0
    while index < len(found):
        for sub in found[index].__subclasses__():
            if sub not in found:
                found.append(sub)
        index += 1
    return found
