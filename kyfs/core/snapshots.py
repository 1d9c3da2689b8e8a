"""Snapshots and diffs of workspaces, without I/O: names, the shapes the engines give,
and how two trees are compared.

A snapshot is a named, read-only image of one workspace at one moment: every name with
its node's type, permission bits, owner, times and value. It is kept inside the
workspace (kyfs.engine.sql.snapshots) and shares its values' blocks with the live keys,
so making one costs a row per name and no byte of any value.

A *tree* is what ``kyfs diff`` compares: a workspace as it is now (``W``) or one of its
snapshots (``W@NAME``, :func:`parse_tree`). :func:`compare` lists what differs between
two trees' :class:`Fingerprint` maps, key by key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from kyfs.core.errors import InvalidName

SNAPSHOT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
SEPARATOR = "@"  # WORKSPACE@SNAPSHOT names a snapshot where a tree is taken
VIEW = ".snapshots"  # the read-only directory of a workspace's snapshots in the mount


def check_snapshot_name(name: str) -> str:
    """``name`` when it is a valid snapshot name: 1 to 64 characters of letters, digits,
    ``_ . : -``, starting with a letter or digit (so it is one path component, never
    ``.`` or ``..``, and holds no ``@`` or ``/``).

    Raises:
        InvalidName: (EINVAL, exit 2) not a valid snapshot name.
    """
    if not SNAPSHOT_NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid snapshot name {name!r}: 1-64 letters, digits, '_', '.', ':' or '-',"
            " starting with a letter or digit"
        )
    return name


def default_name(now_ns: int | None = None) -> str:
    """The name a snapshot made without one gets: its UTC time, ``YYYYmmddTHHMMSSZ``
    (sortable, as ZFS and btrfs tools name theirs)."""
    seconds = (time.time_ns() if now_ns is None else now_ns) / 1e9
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def parse_tree(text: str) -> tuple[str, str | None]:
    """``WORKSPACE`` or ``WORKSPACE@SNAPSHOT`` as (workspace, snapshot or None).

    Raises:
        InvalidName: (EINVAL, exit 2) the snapshot part is not a valid snapshot name.
    """
    workspace, sep, snapshot = text.rpartition(SEPARATOR)
    if not sep:
        return text, None
    return workspace, check_snapshot_name(snapshot)


@dataclass(frozen=True)
class Snapshot:
    """One snapshot of a workspace.

    Attributes:
        name: its name (:func:`check_snapshot_name`).
        created_ns: when it was made, ns since the epoch, UTC.
        keys: how many names it holds (directories, files, links).
        size: the bytes of its values (the sum of its regular files' sizes).
        history_id: the newest history row when it was made (what ``kyfs log`` has
            recorded up to it).
    """

    name: str
    created_ns: int
    keys: int
    size: int
    history_id: int


@dataclass(frozen=True)
class Fingerprint:
    """What ``kyfs diff`` compares of one key of a tree.

    Attributes:
        kind: the node type (kyfs.core.nodes: REG, DIR, LNK or a special type).
        mode: permission bits (``0o7777``).
        size: the value's length in bytes (a symbolic link: its target's).
        digest: identifies the content: the SHA-256 of the value's block hashes and
            places for a regular file (equal values cut alike give equal digests; the
            diff compares the bytes when the digests differ but the sizes do not), the
            target for a symbolic link, empty otherwise.
    """

    kind: int
    mode: int
    size: int
    digest: bytes


@dataclass(frozen=True)
class Change:
    """One key that differs between two trees: ``status`` is "added" (only in the
    second), "deleted" (only in the first) or "changed" (in both, with another type,
    value, target or mode; ``what`` names which, e.g. ``["value"]`` or ``["mode"]``)."""

    key: str
    status: str
    what: tuple[str, ...] = ()


def compare(
    old: Mapping[str, Fingerprint],
    new: Mapping[str, Fingerprint],
    same_bytes: dict[str, bool] | None = None,
) -> list[Change]:
    """Every key that differs from ``old`` to ``new``, sorted by key. ``same_bytes`` holds,
    for a key whose digests differ at equal sizes, whether the bytes are equal after all
    (a value cut into other blocks); a key missing there counts as changed."""
    changes: list[Change] = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if before is None:
            changes.append(Change(key, "added"))
        elif after is None:
            changes.append(Change(key, "deleted"))
        else:
            what: list[str] = []
            if before.kind != after.kind:
                what.append("type")
            elif before.size != after.size or (
                before.digest != after.digest and not (same_bytes or {}).get(key, False)
            ):
                what.append("value")
            if before.mode != after.mode:
                what.append("mode")
            if what:
                changes.append(Change(key, "changed", tuple(what)))
    return changes
