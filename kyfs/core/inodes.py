"""Inode numbers: the rule that turns a workspace's tag and a node's id into st_ino.

``st_ino = inode_tag << NODE_BITS | node_id``, with a tag in 1..MAX_TAG (17 bits) and a
node id in 1..MAX_NODE (36 bits), so every st_ino is below 2**53: JavaScript's numbers
(Node.js's ``fs.statSync().ino``) are exact up to there, and larger numbers collide.
Tag 0 is never a workspace's: the mount's virtual nodes live below ``1 << NODE_BITS``:
the views' names below 2**33 (kyfs.vfs.tree.virtual_ino), the names in snapshots from
2**33 up (:func:`snapshot_inode`).

A tag is unique among the workspaces of one data directory (one PostgreSQL database);
the engines keep it so (create, adopt, restore from the trash, fsck --repair, and open of
a workspace that carries a tag of the old 23-bit rule) with :func:`settled_tag`.

Pure functions, no I/O, no state besides the random generator passed in: safe from any
thread.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping

from kyfs.core.errors import OutOfInodes

NODE_BITS = 36  # bits of a node id in st_ino
TAG_BITS = 17  # bits of a workspace's tag in st_ino
MAX_NODE = (1 << NODE_BITS) - 1  # the largest node id a workspace may hold (~6.9e10)
MAX_TAG = (1 << TAG_BITS) - 1  # the largest tag: 131,071 workspaces per data directory
LIMIT = 1 << (NODE_BITS + TAG_BITS)  # 2**53: every st_ino is below it
SNAPSHOT_BASE = 1 << 33  # the names in snapshots: [2**33, 2**36) (snapshot_inode)
SNAPSHOT_SPAN = (1 << NODE_BITS) - SNAPSHOT_BASE
# Where a workspace's snapshot numbers start in that range: its tag times this (odd, near
# SNAPSHOT_SPAN / 1.618, so that the tags spread their starts far apart).
_SNAPSHOT_SPREAD = 37_139_198_651


def inode(tag: int, node_id: int) -> int:
    """The st_ino of node ``node_id`` of the workspace tagged ``tag``: ``tag << 36 | id``,
    an int in [1 << 36, 2**53).

    Raises:
        OutOfInodes: (ENOSPC, exit 4) ``node_id`` does not fit in 36 bits.
    """
    if not 0 <= node_id <= MAX_NODE:
        raise OutOfInodes(f"node id {node_id} is beyond the {NODE_BITS}-bit inode range")
    return (tag << NODE_BITS) | node_id


def snapshot_inode(tag: int, item_id: int) -> int:
    """The st_ino of the name ``item_id`` of a snapshot (its snapshot item's id, unique in
    the workspace tagged ``tag``) in the mount's ``.snapshots`` view: in
    [2**33, 2**36), never a live node's (those are at ``1 << 36`` and above) nor a view's
    (kyfs.vfs.tree.virtual_ino, below 2**33); the same for the same item across remounts
    (a snapshot never changes); distinct for every item of one workspace (up to
    SNAPSHOT_SPAN, 6.0e10 item ids). Each workspace's numbers start at its tag times an
    odd constant near SNAPSHOT_SPAN / 1.618 (mod SNAPSHOT_SPAN), which spreads the starts
    evenly: two workspaces' numbers can meet only when their item ids run past the gap
    between their starts (240,000 for the closest two of the 131,071 tags, 460,000 on
    average). A number shared across workspaces fools no tool that matters: they
    compare st_ino only for files with several links (tar, cp -a, rsync -H, du) or for
    the same path under two trees (diff -r), and a snapshot's files have one link each.
    """
    return SNAPSHOT_BASE + (item_id + tag * _SNAPSHOT_SPREAD) % SNAPSHOT_SPAN


def check_node_id(node_id: int) -> int:
    """``node_id`` when it fits the inode rule (a new node's id).

    Raises:
        OutOfInodes: (ENOSPC, exit 4) it is above MAX_NODE (2**36 - 1).
    """
    if node_id > MAX_NODE:
        raise OutOfInodes(
            f"the workspace has used every node id of the {NODE_BITS}-bit inode range"
        )
    return node_id


def valid_tag(tag: int) -> bool:
    """True when ``tag`` is one the rule allows (1..MAX_TAG)."""
    return 1 <= tag <= MAX_TAG


def narrowed(tag: int) -> int:
    """The tag of the current rule that an old (up to 23-bit, or any positive) tag maps
    to: ``1 + (tag - 1) mod MAX_TAG``, itself for a tag that is already valid."""
    return 1 + (tag - 1) % MAX_TAG


def settled_tag(tag: int, used: Collection[int], rng: random.Random | None = None) -> int:
    """The tag a workspace should carry, given its own ``tag`` and the tags ``used`` by
    the other workspaces of its data directory: ``tag`` itself when it is valid and free,
    else :func:`narrowed` when that is free, else a random free tag.

    Raises:
        OutOfInodes: (ENOSPC, exit 4) every tag is used.
    """
    if valid_tag(tag) and tag not in used:
        return tag
    wanted = narrowed(tag) if tag > 0 else 0
    if valid_tag(wanted) and wanted not in used:
        return wanted
    taken = {t for t in used if valid_tag(t)}
    if len(taken) >= MAX_TAG:
        raise OutOfInodes(f"every one of the {MAX_TAG} inode tags is in use")
    pick = rng or random.SystemRandom()
    for _ in range(64):  # at least one is free: try at random, then walk (a full set)
        candidate = pick.randrange(1, MAX_TAG + 1)
        if candidate not in taken:
            return candidate
    return next(t for t in range(1, MAX_TAG + 1) if t not in taken)


def new_tag(used: Collection[int], rng: random.Random | None = None) -> int:
    """A random tag not in ``used``, for a new workspace.

    Raises:
        OutOfInodes: (ENOSPC, exit 4) every tag is used.
    """
    return settled_tag(0, used, rng)


def resettled(tags: Mapping[str, int], rng: random.Random | None = None) -> dict[str, int]:
    """The changes that make the tags of a data directory's workspaces (``tags``: name ->
    tag) valid and unique: name -> new tag, for the workspaces that need one. Going by
    name, the first holder of a tag keeps it; a later one, or one with a tag of the old
    rule, gets :func:`settled_tag` against every tag in use.

    Raises:
        OutOfInodes: (ENOSPC, exit 4) no tag is free for one that needs it.
    """
    kept: set[int] = set()
    changes: dict[str, int] = {}
    in_use = set(tags.values())
    for name in sorted(tags):
        tag = tags[name]
        if valid_tag(tag) and tag not in kept:
            kept.add(tag)
            continue
        new = settled_tag(tag, in_use | kept, rng)
        kept.add(new)
        in_use.add(new)
        changes[name] = new
    return changes
