"""Who may do what to a node, by POSIX's permission rules (no I/O): the caller of a
request, the check of one permission against a node's owner, group and mode, and the
modes the mount's read-only views show.

The mount leaves the checks on real nodes to the kernel (``default_permissions``: it
reads st_uid, st_gid and st_mode from getattr). A virtual view shows the owner and mode of
what it mirrors so that the kernel's checks still hold, and a view that gathers nodes from
many places (``/.search``) filters them with :func:`permits` by the caller of the request.

The rules are those of POSIX.1-2017 "File access permissions" (Base Definitions 4.5) as
Linux applies them without ACLs (generic_permission in fs/namei.c): root may read and
search anything and execute a file that has any execute bit; anyone else gets the owner's
bits when they own the node, else the group's bits when the node's group is their primary
or one of their supplementary groups, else the others' bits.
"""

from __future__ import annotations

from typing import NamedTuple

READ = 4  # the r bit of each class (R_OK)
WRITE = 2  # the w bit (W_OK)
SEARCH = 1  # the x bit: search for a directory, execute for a file (X_OK)

_WRITE_BITS = 0o222
_SPECIAL_BITS = 0o7000  # setuid, setgid, sticky


class Caller(NamedTuple):
    """The process that made a request: its effective uid and gid and its supplementary
    groups (libfuse's fuse_get_context and fuse_getgroups; kyfs.fuse.adapter)."""

    uid: int
    gid: int
    groups: frozenset[int] = frozenset()

    @property
    def is_root(self) -> bool:
        """uid 0, which the permission bits do not bind (CAP_DAC_OVERRIDE)."""
        return self.uid == 0


def permits(caller: Caller, uid: int, gid: int, mode: int, want: int, directory: bool) -> bool:
    """True when ``caller`` has every permission of ``want`` (READ | WRITE | SEARCH) on a
    node owned by ``uid``:``gid`` with permission bits ``mode`` (st_mode's low 12 bits;
    the type bits are ignored); ``directory`` says whether the node is one (root may
    search every directory, but execute only a file with an execute bit)."""
    mode &= 0o7777
    if caller.is_root:
        return directory or not want & SEARCH or bool(mode & 0o111)
    if caller.uid == uid:
        bits = mode >> 6
    elif gid == caller.gid or gid in caller.groups:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


def view_of_directory(mode: int) -> int:
    """The mode a read-only view shows for a directory whose permission bits are
    ``mode``: the same read and search bits, no write bits and no setuid, setgid or
    sticky bit (e.g. 0o2775 -> 0o555, 0o700 -> 0o500)."""
    return mode & 0o7777 & ~_WRITE_BITS & ~_SPECIAL_BITS


def view_of_file(mode: int) -> int:
    """The mode a read-only view shows for a file whose permission bits are ``mode``:
    only its read bits (e.g. 0o644 -> 0o444, 0o600 -> 0o400, 0o755 -> 0o444)."""
    return mode & 0o444


def directory_of_file(mode: int) -> int:
    """The mode of a read-only directory that holds a file's versions: each class that
    may read the file may list it, and anyone who reaches it may search it, as anyone who
    may search the file's directory may stat the file (e.g. 0o640 -> 0o551, 0o600 ->
    0o511): a version's stat tells what the file's own stat tells, its content and the
    list of versions need read permission on the file."""
    return mode & 0o444 | 0o111
