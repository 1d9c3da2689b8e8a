"""Inode numbers (issue 28 item 6): st_ino below 2**53, unique across the workspaces of a
data directory and stable for a node's life, on every engine. The rule itself
(kyfs.core.inodes) is tested first, without an engine."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kyfs.core import inodes
from kyfs.core.errors import OutOfInodes
from kyfs.engine.base import Engine

OLD_TAG = (1 << 23) - 5  # a tag of the old rule: st_ino = tag << 40 | id, above 2**53


# --- the rule ----------------------------------------------------------------------------
def test_inode_is_tag_and_node_id_below_2_53() -> None:
    assert inodes.inode(1, 1) == (1 << 36) | 1
    assert inodes.inode(inodes.MAX_TAG, inodes.MAX_NODE) == (1 << 53) - 1
    with pytest.raises(OutOfInodes):
        inodes.inode(1, inodes.MAX_NODE + 1)
    assert OutOfInodes.errno == 28 and OutOfInodes.exit_code == 4  # ENOSPC


def test_settled_tag_keeps_narrows_or_picks_a_free_one() -> None:
    assert inodes.settled_tag(7, {1, 2}) == 7
    assert inodes.narrowed(OLD_TAG) == 1 + (OLD_TAG - 1) % inodes.MAX_TAG
    assert inodes.settled_tag(OLD_TAG, set()) == inodes.narrowed(OLD_TAG)
    taken = {inodes.narrowed(OLD_TAG), 7}
    picked = inodes.settled_tag(OLD_TAG, taken, random.Random(1))
    assert inodes.valid_tag(picked) and picked not in taken
    assert inodes.settled_tag(7, {7}, random.Random(2)) != 7
    every = set(range(1, inodes.MAX_TAG + 1))
    assert inodes.settled_tag(0, every - {99}) == 99  # the last free one is found
    with pytest.raises(OutOfInodes):
        inodes.new_tag(every)


def test_resettled_keeps_the_first_holder_by_name() -> None:
    changes = inodes.resettled({"a": 5, "b": 5, "c": OLD_TAG, "d": 6}, random.Random(3))
    assert set(changes) == {"b", "c"}
    assert changes["c"] == inodes.narrowed(OLD_TAG)
    assert changes["b"] not in {5, 6, changes["c"]}


# --- every engine --------------------------------------------------------------------------
def _tag(engine: Engine, name: str) -> int:
    with engine.using(name) as workspace:
        return int(workspace.inode_tag)  # type: ignore[attr-defined]


def _set_tag(engine: Engine, name: str, tag: int) -> None:
    """Write a tag behind the engine's back (as an old kyfs or a copied file would)."""
    with engine.using(name) as workspace:
        workspace.set_inode_tag(tag)  # type: ignore[attr-defined]


def test_new_workspaces_get_distinct_tags_below_2_53(engine: Engine) -> None:
    names = [f"w{i}" for i in range(12)]
    seen = set()
    for name in names:
        engine.create(name)
        with engine.using(name) as workspace:
            entry = workspace.set("k", b"v")
            ino = workspace.inode(entry.id)
            assert ino < 1 << 53 and ino >> inodes.NODE_BITS == _tag(engine, name)
            seen.add(ino)
    tags = [_tag(engine, name) for name in names]
    assert all(inodes.valid_tag(t) for t in tags) and len(set(tags)) == len(names)
    assert len(seen) == len(names)


def test_a_node_keeps_its_inode_across_opens_and_renames(engine: Engine, peer: Engine) -> None:
    engine.create("w")
    with engine.using("w") as workspace:
        first = workspace.inode(workspace.set("a", b"1").id)
        workspace.rename("a", "b")
        assert workspace.inode(workspace.stat("b").id) == first
    with peer.using("w") as workspace:
        assert workspace.inode(workspace.stat("b").id) == first


def test_an_old_tag_is_narrowed_when_opened(engine: Engine, peer: Engine) -> None:
    engine.create("w")
    _set_tag(engine, "w", OLD_TAG)
    with peer.using("w") as workspace:
        node = workspace.set("k", b"v").id
        ino = workspace.inode(node)
        assert workspace.inode_tag == inodes.narrowed(OLD_TAG)  # type: ignore[attr-defined]
        assert ino < 1 << 53
    with engine.using("w") as workspace:  # stored: the same number from now on
        assert workspace.inode(node) == ino


def test_an_old_tag_whose_narrowing_is_taken_gets_a_free_one(engine: Engine) -> None:
    engine.create("a")
    engine.create("b")
    _set_tag(engine, "b", inodes.narrowed(OLD_TAG))
    _set_tag(engine, "a", OLD_TAG)
    tag = _tag(engine, "a")
    assert inodes.valid_tag(tag) and tag != inodes.narrowed(OLD_TAG)
    assert _tag(engine, "a") == tag  # stored


def test_settle_tags_mends_duplicates(engine: Engine) -> None:
    for name in ("a", "b", "c"):
        engine.create(name)
    _set_tag(engine, "b", _tag(engine, "a"))
    _set_tag(engine, "c", _tag(engine, "a"))
    kept = _tag(engine, "a")
    changes = engine.settle_tags()
    assert len(changes) == 2 and all("inode tag" in line for line in changes)
    tags = [_tag(engine, name) for name in ("a", "b", "c")]
    assert tags[0] == kept and len(set(tags)) == 3
    assert engine.settle_tags() == []


def test_fsck_repair_mends_a_duplicate(engine: Engine) -> None:
    engine.create("a")
    engine.create("b")
    _set_tag(engine, "b", _tag(engine, "a"))
    _, done = engine.check("b", repair=True)
    assert any("inode tag" in line for line in done)
    assert _tag(engine, "a") != _tag(engine, "b")


def test_a_restored_workspace_does_not_take_a_tag_in_use(engine: Engine) -> None:
    engine.create("a")
    old = _tag(engine, "a")
    engine.drop("a")
    engine.create("b")
    _set_tag(engine, "b", old)
    engine.restore_trash("a")
    assert _tag(engine, "a") != _tag(engine, "b") == old


def test_node_ids_beyond_36_bits_are_refused(engine: Engine) -> None:
    engine.create("w")
    with engine.using("w") as workspace:
        with workspace._atomic() as conn:  # type: ignore[attr-defined]
            workspace._after_copy(conn, inodes.MAX_NODE)  # type: ignore[attr-defined]
        with pytest.raises(OutOfInodes):
            workspace.set("k", b"v")
        assert workspace.keys() == []  # nothing written


def test_an_adopted_copy_does_not_keep_a_tag_in_use(engine: Engine, tmp_path: Path) -> None:
    engine.create("a")
    with engine.using("a") as workspace:
        workspace.set("k", b"v")
        workspace.backup_to(tmp_path / "a.db")
    (tmp_path / "stage").mkdir()
    engine.adopt("copy", engine.stage(tmp_path / "a.db", tmp_path / "stage"))
    assert _tag(engine, "copy") != _tag(engine, "a")
    with engine.using("copy") as workspace:
        assert workspace.get("k") == b"v"


def test_a_db_file_with_an_old_tag_shows_inodes_below_2_53(tmp_path: Path) -> None:
    from kyfs.engine.sqlite.engine import SqliteEngine

    engine = SqliteEngine(tmp_path / "workspaces")
    try:
        engine.create("w")
        with engine.using("w") as workspace:
            workspace.set_inode_tag(OLD_TAG)
            node = workspace.set("k", b"v").id
        with engine.using_file(tmp_path / "workspaces" / "w.db") as workspace:
            assert workspace.inode(node) < 1 << 53
    finally:
        engine.close()
