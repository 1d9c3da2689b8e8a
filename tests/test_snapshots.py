"""Snapshots (issue 29 item 2) in the engine, on both engines: a snapshot shares its
values' blocks with the live keys and keeps them when the live keys change or go;
restore brings a workspace back; delete frees what only the snapshot used; fsck knows
snapshot values."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyfs.app import open_engine
from kyfs.core.errors import (
    AlreadyExists,
    InvalidName,
    IsADirectory,
    KeyNotFound,
    NotADirectory,
    SnapshotNotFound,
)
from kyfs.core.nodes import DIR, LNK, REG
from kyfs.core.snapshots import compare
from kyfs.engine.base import Workspace

pytestmark = pytest.mark.usefixtures("both_engines")


@pytest.fixture
def ws() -> Iterator[Workspace]:
    engine = open_engine()
    try:
        engine.create("snaps")
        with engine.using("snaps") as workspace:
            yield workspace
    finally:
        engine.close()


def _tree(ws: Workspace, snapshot: str | None = None) -> dict[str, object]:
    """Every name of the workspace (or a snapshot) with its type and value's sha256."""
    out: dict[str, object] = {}
    prints = ws.fingerprints(snapshot)
    for key, print_ in prints.items():
        if print_.kind == REG:
            value = ws.get(key) if snapshot is None else ws.snapshot_value(snapshot, key)
            out[key] = ("f", print_.mode, hashlib.sha256(value).hexdigest())
        elif print_.kind == LNK:
            out[key] = ("l", print_.digest)
        else:
            out[key] = ("d", print_.mode)
    return out


def _blocks(ws: Workspace) -> int:
    """How many blocks the workspace's block store holds."""
    return int(ws._row("SELECT count(*) FROM blocks")[0])  # type: ignore[attr-defined]


def test_a_snapshot_keeps_what_the_workspace_held(ws: Workspace) -> None:
    big = os.urandom(300_000)
    ws.set("a/big.bin", big)
    ws.set("a/note", b"hello\n")
    ws.set("b", b"bee")
    ws.symlink("link", b"a/note")
    ws.link("a/note", "hard")
    before = _tree(ws)
    blocks_before = _blocks(ws)
    taken = ws.create_snapshot("one")
    assert (taken.name, taken.keys, taken.size) == ("one", 6, 300_000 + 6 + 3 + 6)
    assert _blocks(ws) == blocks_before  # no block copied or added
    assert [s.name for s in ws.snapshots()] == ["one"]
    # the live keys change in every way a value can
    changed = bytearray(big)
    changed[1000:1010] = b"x" * 10
    ws.set("a/big.bin", bytes(changed))
    ws.set("a/note", b"changed\n")  # through one name of a hard link
    ws.delete("b")
    ws.set("new", b"new")
    ws.chmod("a", 0o700)
    ws.truncate("hard", 2)
    assert _tree(ws, "one") == before  # the snapshot still holds what was
    assert ws.snapshot_value("one", "a/big.bin") == big
    assert ws.snapshot_readlink("one", "link") == b"a/note"
    assert [e.key for e in ws.snapshot_children("one", "a")] == ["a/big.bin", "a/note"]
    note, hard = ws.snapshot_stat("one", "a/note"), ws.snapshot_stat("one", "hard")
    assert note.id == hard.id and note.nlink == hard.nlink == 2  # one node, two names
    assert ws.snapshot_stat("one", "b").nlink == 1
    assert ws.snapshot_stat("one", "a").kind == DIR
    assert ws.check() == []
    # and a diff names exactly what changed
    changes = {c.key: c.status for c in compare(ws.fingerprints("one"), ws.fingerprints())}
    assert changes == {
        "a": "changed",
        "a/big.bin": "changed",
        "a/note": "changed",
        "hard": "changed",
        "b": "deleted",
        "new": "added",
    }
    # restore: the workspace is what the snapshot held, byte for byte
    assert ws.restore_snapshot("one") > 0
    assert _tree(ws) == before
    assert ws.stat("hard").id == ws.stat("a/note").id  # the hard link again
    assert ws.check() == []
    assert ws.restore_snapshot("one") == 0  # nothing left to change
    # a delete of the snapshot frees only what it alone used
    ws.create_snapshot("two")
    ws.set("a/big.bin", os.urandom(200_000))
    held = _blocks(ws)
    ws.delete_snapshot("one")
    assert _blocks(ws) == held  # "two" and the history still use the old blocks
    ws.delete_snapshot("two")
    ws.thin_history(2**62)
    ws.purge_archive(2**62)
    assert _blocks(ws) < held
    assert ws.check() == []


def test_a_snapshot_keeps_extended_attributes_and_restore_brings_them_back(
    ws: Workspace,
) -> None:
    ws.set("k", b"v")
    ws.set_xattr("k", "user.tag", b"one")
    ws.create_snapshot("s")
    item = ws.snapshot_stat("s", "k").id
    assert ws.snapshot_xattrs(item) == {b"user.tag": b"one"}
    ws.set_xattr("k", "user.tag", b"two")
    ws.set_xattr("k", "user.more", b"x")
    assert ws.snapshot_xattrs(item) == {b"user.tag": b"one"}
    assert ws.restore_snapshot("s") == 1
    assert ws.xattr_names("k") == ["user.tag"] and ws.get_xattr("k", "user.tag") == b"one"
    ws.delete_snapshot("s")
    assert ws.snapshot_xattrs(item) == {}
    assert ws.check() == []


def test_restore_undoes_a_hard_link_made_since(ws: Workspace) -> None:
    ws.set("a", b"first")
    ws.set("b", b"second")
    ws.create_snapshot("s")
    ws.delete("b")
    ws.link("a", "b")  # now one node under both names
    ws.set("a", b"changed")
    ws.restore_snapshot("s")
    assert (ws.get("a"), ws.get("b")) == (b"first", b"second")
    assert ws.stat("a").id != ws.stat("b").id
    assert ws.check() == []


def test_restore_brings_back_ttls(ws: Workspace) -> None:
    ws.set("session", b"abc", ttl_s=3600)
    ws.set("plain", b"x")
    expires = ws.expiry("session")
    ws.create_snapshot("s")
    ws.set_ttl("session", None)
    ws.set_ttl("plain", 60)
    ws.restore_snapshot("s")
    assert (ws.expiry("session"), ws.expiry("plain")) == (expires, None)


def test_snapshot_errors(ws: Workspace) -> None:
    ws.set("k", b"v")
    ws.create_snapshot("s")
    with pytest.raises(AlreadyExists):
        ws.create_snapshot("s")
    for bad in ("", "../x", "a/b", "x@y", ".hidden", "a" * 65):
        with pytest.raises(InvalidName):
            ws.create_snapshot(bad)
    with pytest.raises(SnapshotNotFound):
        ws.restore_snapshot("nosuch")
    with pytest.raises(SnapshotNotFound):
        ws.delete_snapshot("nosuch")
    with pytest.raises(KeyNotFound):
        ws.snapshot_stat("s", "nosuch")
    named = ws.create_snapshot()
    assert named.name[:2] == "20" and named.name.endswith("Z")


def test_a_value_deleted_while_the_disk_is_short_stays_in_its_snapshot(ws: Workspace) -> None:
    value = os.urandom(100_000)
    ws.set("k", value)
    ws.create_snapshot("s")
    ws.short = lambda: True  # type: ignore[method-assign]
    try:
        ws.delete("k")  # gone for good, blocks freed at once: but the snapshot's handed over
    finally:
        del ws.short  # type: ignore[method-assign]
    assert ws.snapshot_value("s", "k") == value
    assert ws.check() == []
    ws.restore_snapshot("s")
    assert ws.get("k") == value


# --- any sequence of changes and snapshot operations, against a model --------------------
_KEYS = ["a", "b", "d/c", "d/e"]
_op = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(_KEYS), st.integers(0, 5), st.integers(0, 40_000)),
    st.tuples(st.just("delete"), st.sampled_from(_KEYS)),
    st.tuples(st.just("truncate"), st.sampled_from(_KEYS), st.integers(0, 30_000)),
    st.tuples(st.just("link"), st.sampled_from(_KEYS), st.sampled_from(_KEYS)),
    st.tuples(st.just("snapshot"), st.sampled_from(["s1", "s2"])),
    st.tuples(st.just("restore"), st.sampled_from(["s1", "s2"])),
    st.tuples(st.just("drop"), st.sampled_from(["s1", "s2"])),
    st.tuples(st.just("thin")),
)


def _value(seed: int, size: int) -> bytes:
    """A value of ``size`` bytes whose blocks repeat between seeds (shared blocks)."""
    return (bytes([seed]) * 9000 + b"%d" % seed) * (size // 9000 + 1)


@settings(max_examples=int(os.environ.get("KYFS_EXAMPLES", "40")), deadline=None)
@given(st.lists(_op, min_size=1, max_size=14))
def test_any_sequence_keeps_every_snapshot_and_every_count_exact(ops: list[tuple]) -> None:
    """After any sequence of writes, deletes, truncations, links, snapshots, restores,
    snapshot deletes and history thinning: every snapshot reads what the workspace held
    when it was made, fsck finds nothing (block references, extents, items), and a
    restore gives exactly the snapshot's keys and values."""
    engine = open_engine()
    name = f"p{os.getpid()}x{abs(hash(tuple(ops))) % 10**9}"
    try:
        engine.create(name)
        with engine.using(name) as ws:
            snapshots: dict[str, dict[str, bytes]] = {}
            for op in ops:
                kind = op[0]
                try:
                    if kind == "set":
                        ws.set(op[1], _value(op[2], op[3])[: op[3]])
                    elif kind == "delete":
                        ws.delete(op[1])
                    elif kind == "truncate":
                        ws.truncate(op[1], op[2])
                    elif kind == "link" and op[1] != op[2]:
                        ws.link(op[1], op[2])
                    elif kind == "snapshot":
                        ws.create_snapshot(op[1])
                        snapshots[op[1]] = {k: ws.get(k) for k in ws.keys()}
                    elif kind == "restore":
                        ws.restore_snapshot(op[1])
                        assert {k: ws.get(k) for k in ws.keys()} == snapshots[op[1]]
                    elif kind == "drop":
                        ws.delete_snapshot(op[1])
                        del snapshots[op[1]]
                    elif kind == "thin":
                        ws.thin_history(2**62)
                        ws.purge_archive(2**62)
                except (KeyNotFound, SnapshotNotFound, AlreadyExists, IsADirectory, NotADirectory):
                    pass
                for snap, held in snapshots.items():
                    found = {
                        k: ws.snapshot_value(snap, k)
                        for k, f in ws.fingerprints(snap).items()
                        if f.kind == REG
                    }
                    assert found == held, (op, snap)
            assert ws.check() == []
    finally:
        with contextlib.suppress(Exception):
            engine.drop(name)
        engine.close()
