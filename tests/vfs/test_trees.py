"""The mount's virtual trees and the open-file buffer, without libfuse: kyfs.vfs knows no
FUSE, so these run where /dev/fuse is missing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kyfs.core import inodes
from kyfs.core.access import Caller, permits
from kyfs.core.errors import (
    InvalidInput,
    IsADirectory,
    KeyNotFound,
    NotADirectory,
    SnapshotNotFound,
    StaleName,
)
from kyfs.engine.sqlite.engine import SqliteEngine
from kyfs.platform.metrics import Metrics
from kyfs.vfs.control_tree import METRICS_FILE, ControlTree
from kyfs.vfs.search_tree import SearchTree
from kyfs.vfs.snapshots_tree import Shown, SnapshotsTree
from kyfs.vfs.tree import dots
from kyfs.vfs.versions_tree import VersionsTree

ROOT = Caller(0, 0)
ALICE = Caller(1001, 1001)
BOB = Caller(1002, 1002)
BOB_IN_ALICES_GROUP = Caller(1002, 1002, frozenset({1001}))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[SqliteEngine]:
    made = SqliteEngine(tmp_path / "ws", cache=True)
    made.create("w")
    yield made
    made.close()


def test_vfs_loads_no_fuse_binding() -> None:
    code = (
        "import sys, kyfs.vfs.search_tree, kyfs.vfs.versions_tree, kyfs.vfs.control_tree,"
        " kyfs.vfs.snapshots_tree, kyfs.vfs.openfile;"
        " print(any(m in sys.modules for m in ('mfusepy', 'kyfs.fuse.binding')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_versions_tree(engine: SqliteEngine) -> None:
    ws = engine.open("w")
    for text in (b"one", b"two"):
        ws.set("conf/app.toml", text)
    tree = VersionsTree("w", ws)
    assert stat.S_ISDIR(tree.getattr("")["st_mode"])
    assert [name for name, _, _ in tree.readdir("")] == ["conf"]
    versions = [name for name, _, _ in tree.readdir("conf/app.toml")]
    assert len(versions) == 2
    assert [tree.content(f"conf/app.toml/{v}") for v in versions] == [b"one", b"two"]
    attrs = tree.getattr(f"conf/app.toml/{versions[0]}")
    assert stat.S_ISREG(attrs["st_mode"]) and attrs["st_size"] == 3 and attrs["st_ino"] > 1
    inos = {a["st_ino"] for _, a, _ in tree.readdir("conf/app.toml")}
    assert len(inos) == 2 and 0 not in inos  # glibc skips d_ino 0
    with pytest.raises(KeyNotFound):
        tree.getattr("nothing")
    with pytest.raises(InvalidInput):
        tree.readlink("conf")


def test_search_tree(engine: SqliteEngine) -> None:
    engine.open("w").set("notes/jwt", b"the jwt token")
    tree = SearchTree(engine.names, engine.open)
    listing = tree.readdir("jwt token", ROOT)
    assert len(listing) == 1
    name, attrs, _ = listing[0]
    assert stat.S_ISLNK(attrs["st_mode"]) and name.startswith("01-w-notes_jwt")
    assert tree.readlink(f"jwt token/{name}", ROOT) == "../../w/notes/jwt"
    assert stat.S_ISLNK(tree.getattr(f"jwt token/{name}", ROOT)["st_mode"])
    assert tree.readdir("", ROOT) == []  # queries are not listed


def test_search_tree_ranks_by_words_even_where_embeddings_are_kept(
    engine: SqliteEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mount's .search view never embeds (a model load and pending texts would run
    inside a FUSE request): a workspace that keeps embeddings is listed by BM25."""
    from kyfs import search

    workspace = engine.open("w")
    workspace.set("notes/jwt", b"the jwt token")
    workspace.keep_embeddings("any-model", 4)  # every key now waits for its embedding

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("the .search view ran a semantic search")

    monkeypatch.setattr(search, "semantic", refuse)
    listing = SearchTree(engine.names, engine.open).readdir("jwt token", ROOT)
    assert len(listing) == 1 and listing[0][0].startswith("01-w-notes_jwt")
    assert workspace.count_pending_embeddings() == 1  # nothing was embedded


def test_permits_follows_posix() -> None:
    """POSIX 4.5 as Linux applies it: the owner's bits, else the group's (primary or
    supplementary), else the others'; root reads and searches anything and executes a
    file with any x bit."""
    assert permits(ALICE, 1001, 1001, 0o600, 4, False)
    assert not permits(BOB, 1001, 1001, 0o600, 4, False)
    assert permits(BOB_IN_ALICES_GROUP, 1001, 1001, 0o640, 4, False)
    assert not permits(BOB_IN_ALICES_GROUP, 1001, 1001, 0o604, 4, False)  # group bits rule
    assert permits(BOB, 1001, 1001, 0o604, 4, False)
    assert not permits(ALICE, 1001, 1001, 0o077, 4, False)  # the owner's bits rule
    assert permits(ROOT, 1001, 1001, 0o000, 4, False)
    assert permits(ROOT, 1001, 1001, 0o000, 1, True)
    assert not permits(ROOT, 1001, 1001, 0o644, 1, False)
    assert permits(ROOT, 1001, 1001, 0o744, 1, False)


def test_versions_tree_shows_the_owner_and_mode_of_what_it_mirrors(
    engine: SqliteEngine,
) -> None:
    """.versions mirrors the workspace's top, its directories mirror the real ones
    (read-only), a key's directory of versions may be listed by those who may read the
    key and searched by anyone who reaches it, a version file has the key's owner and
    read bits; versions of a file that is gone, or replaced by a newer file or a link,
    are the daemon's own, 0500/0400."""
    ws = engine.open("w")
    ws.chmod("", 0o2775)
    ws.chown("", 1001, 1001)
    ws.mkdir("private", 0o700)
    ws.chown("private", 1001, 1001)
    for text in (b"one", b"two"):
        ws.set("private/token", text)
        ws.set("notes", text)
        ws.set("gone", text)
    ws.chown("private/token", 1001, 1001)
    ws.chmod("private/token", 0o640)
    ws.chmod("notes", 0o604)
    ws.delete("gone")
    tree = VersionsTree("w", ws)

    def shown(rest: str) -> tuple[int, int, int]:
        attrs = tree.getattr(rest)
        return attrs["st_uid"], attrs["st_gid"], stat.S_IMODE(attrs["st_mode"])

    assert shown("") == (1001, 1001, 0o555)
    assert shown("private") == (1001, 1001, 0o500)
    assert shown("private/token") == (1001, 1001, 0o551)
    version = tree.readdir("private/token")[0][0]
    assert shown(f"private/token/{version}") == (1001, 1001, 0o440)
    assert shown("notes") == (0, 1001, 0o515)  # the setgid top gave its group
    assert shown(f"notes/{tree.readdir('notes')[0][0]}")[2] == 0o404
    daemons = (os.getuid(), os.getgid())
    assert shown("gone") == (*daemons, 0o500)  # the daemon's own: its file is gone
    assert shown(f"gone/{tree.readdir('gone')[0][0]}") == (*daemons, 0o400)
    # a file made later at the name (by another user) lends nothing to older versions
    ws.set("gone", b"mallory's")
    ws.chown("gone", 1002, 1002)
    ws.chmod("gone", 0o644)
    tree = VersionsTree("w", ws)
    modes = [shown(f"gone/{name}") for name, _, _ in tree.readdir("gone")]
    assert modes[:2] == [(*daemons, 0o400)] * 2 and modes[2] == (1002, 1002, 0o444)
    ws.delete("gone")
    ws.symlink("gone", b"notes")  # nor does a symbolic link
    tree = VersionsTree("w", ws)
    assert shown("gone") == (*daemons, 0o500)
    assert {shown(f"gone/{name}") for name, _, _ in tree.readdir("gone")} == {(*daemons, 0o400)}
    listed = {name: stat.S_IMODE(attrs["st_mode"]) for name, attrs, _ in tree.readdir("")}
    assert listed == {"private": 0o500, "notes": 0o515, "gone": 0o500}


def test_search_tree_lists_only_what_the_caller_could_open(engine: SqliteEngine) -> None:
    """A match is listed for a caller with search permission on every directory above
    it and read permission on it; links are numbered among those shown."""
    ws = engine.open("w")
    ws.mkdir("private", 0o700)
    ws.chown("private", 1001, 1001)
    ws.set("private/secret", b"jwt token hidden")
    ws.chown("private/secret", 1001, 1001)
    ws.set("mine", b"jwt token mine")
    ws.chown("mine", 1001, 1001)
    ws.chmod("mine", 0o640)
    ws.set("open", b"jwt token open")
    ws.chmod("open", 0o644)
    tree = SearchTree(engine.names, engine.open)

    def seen(caller: Caller) -> set[str]:
        return {tree.readlink(f"jwt/{name}", caller) for name, _, _ in tree.readdir("jwt", caller)}

    everything = {"../../w/private/secret", "../../w/mine", "../../w/open"}
    assert seen(ROOT) == everything
    assert seen(ALICE) == everything
    assert seen(BOB) == {"../../w/open"}
    assert seen(BOB_IN_ALICES_GROUP) == {"../../w/mine", "../../w/open"}
    names = [name for name, _, _ in tree.readdir("jwt", BOB)]
    assert names[0].startswith("01-")  # numbered among what BOB sees: no gaps
    hidden = next(name for name, _, _ in tree.readdir("jwt", ALICE) if "secret" in name)
    with pytest.raises(KeyNotFound):
        tree.getattr(f"jwt/{hidden}", BOB)
    with pytest.raises(KeyNotFound):
        tree.readlink(f"jwt/{hidden}", BOB)
    ws.chmod("", 0o700)  # the workspace's top closed to others: nothing shows
    tree = SearchTree(engine.names, engine.open)
    assert seen(BOB) == set()


def test_control_tree() -> None:
    metrics = Metrics()
    metrics.record("getattr", 0.001, None)
    tree = ControlTree(metrics)
    text = tree.content(METRICS_FILE)
    assert b"kyfs_operations_total" in text
    assert tree.getattr(METRICS_FILE)["st_size"] == len(text)
    with pytest.raises(KeyNotFound):
        tree.getattr("other")
    assert stat.S_IMODE(tree.getattr("")["st_mode"]) == 0o700  # the mounting user's only
    assert stat.S_IMODE(tree.getattr(METRICS_FILE)["st_mode"]) == 0o600


def test_dots_never_carry_inode_zero() -> None:
    assert all(attrs["st_ino"] != 0 for _, attrs, _ in dots(5))


def test_search_tree_lists_as_many_whatever_others_own(engine: SqliteEngine) -> None:
    """How many of others' keys match changes neither how many matches a caller sees nor
    which: 120 better matches that BOB cannot read do not push his 5 out of the list."""
    ws = engine.open("w")
    for n in range(120):
        ws.set(f"hidden{n}", b"zebra zebra zebra")
        ws.chmod(f"hidden{n}", 0o600)
    for n in range(5):
        ws.set(f"mine{n}", b"zebra among many other words of a longer note " * 3)
        ws.chmod(f"mine{n}", 0o644)
    ws.flush_index()
    tree = SearchTree(engine.names, engine.open)
    shown = {tree.readlink(f"zebra/{name}", BOB) for name, _, _ in tree.readdir("zebra", BOB)}
    assert shown == {f"../../w/mine{n}" for n in range(5)}
    assert len(tree.readdir("zebra", ROOT)) == 100  # the best 100 of 125 for root


def test_an_acl_narrows_the_views_to_the_owner(engine: SqliteEngine) -> None:
    """A key whose access ACL shuts a named user out (u:1002:---) shows mode 0644 bits, by
    which others could read it: its versions and its /.search match are shown to its
    owner (and root) only, never more than the ACL lets through (kyfs.vfs.acls)."""
    from kyfs.core import acl

    ws = engine.open("w")
    ws.set("shut", b"jwt token shut")
    ws.chown("shut", 1001, 1001)
    rules = [acl.Rule(acl.USER_OBJ, 6), acl.Rule(acl.USER, 0, 1002), acl.Rule(acl.GROUP_OBJ, 4)]
    rules += [acl.Rule(acl.MASK, 4), acl.Rule(acl.OTHER, 4)]
    ws.set_xattr_and_mode("shut", acl.ACCESS, acl.pack(rules), 0o644)
    versions = VersionsTree("w", ws)
    version = versions.readdir("shut")[0][0]
    mode = versions.getattr(f"shut/{version}")["st_mode"]
    assert permits(ALICE, 1001, 1001, mode, 4, False)
    assert not permits(BOB, 1001, 1001, mode, 4, False)
    search = SearchTree(engine.names, engine.open)
    assert len(search.readdir("jwt token", ALICE)) == 1
    assert search.readdir("jwt token", BOB) == []
    ws.remove_xattr("shut", acl.ACCESS)  # the mode alone again: others read it
    assert permits(BOB, 1001, 1001, versions.getattr(f"shut/{version}")["st_mode"], 4, False)


def test_snapshots_tree(engine: SqliteEngine) -> None:
    ws = engine.open("w")
    ws.set("conf/app.toml", b"port = 8080\n")
    ws.symlink("link", b"conf/app.toml")
    ws.create_snapshot("s1")
    ws.set("conf/app.toml", b"port = 9090\n")
    shown = Shown()
    tree = SnapshotsTree("w", ws, shown)
    assert [name for name, _, _ in tree.readdir("")] == ["s1"]
    assert [name for name, _, _ in tree.readdir("s1")] == ["conf", "link"]
    attrs = tree.getattr("s1/conf/app.toml")
    assert stat.S_ISREG(attrs["st_mode"]) and attrs["st_size"] == 12
    assert inodes.SNAPSHOT_BASE <= attrs["st_ino"] < 1 << inodes.NODE_BITS
    opened = tree.content("s1/conf/app.toml")
    assert len(opened) == 12 and opened.read(0, 100) == b"port = 8080\n"
    assert opened.read(7, 4) == b"8080"
    assert tree.readlink("s1/link") == "conf/app.toml"
    with pytest.raises(InvalidInput):
        tree.readlink("s1/conf")
    with pytest.raises(IsADirectory):
        tree.content("s1/conf")
    with pytest.raises(NotADirectory):
        tree.readdir("s1/link")
    for missing in ("s2", "s1/nothing", "..", "bad name"):
        with pytest.raises((KeyNotFound, SnapshotNotFound)):
            tree.getattr(missing)
    # a snapshot deleted behind the mount: what was shown of it, to invalidate
    assert shown.gone("w", ws) == []
    ws.delete_snapshot("s1")
    gone = shown.gone("w", ws)
    assert gone[0] == "/w/.snapshots/s1" and gone[-1] == "/w/.snapshots"
    assert "/w/.snapshots/s1/conf/app.toml" in gone
    assert shown.gone("w", ws) == []  # told once
    with pytest.raises(StaleName):
        opened.read(0, 1)


def test_snapshot_inodes_are_distinct_and_apart_from_every_other_kind() -> None:
    numbers = {inodes.snapshot_inode(tag, item) for tag in (1, 2, 77) for item in range(1, 5000)}
    assert len(numbers) == 3 * 4999
    assert min(numbers) >= inodes.SNAPSHOT_BASE > (1 << 32) + 2  # above virtual_ino's range
    assert max(numbers) < inodes.inode(1, 0)  # below every live node's
