"""The mount's virtual trees and the open-file buffer, without libfuse: kyfs.vfs knows no
FUSE, so these run where /dev/fuse is missing."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kyfs.core.errors import InvalidInput, KeyNotFound
from kyfs.engine.sqlite.engine import SqliteEngine
from kyfs.platform.metrics import Metrics
from kyfs.vfs.control_tree import METRICS_FILE, ControlTree
from kyfs.vfs.search_tree import SearchTree
from kyfs.vfs.tree import dots
from kyfs.vfs.versions_tree import VersionsTree


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[SqliteEngine]:
    made = SqliteEngine(tmp_path / "ws", cache=True)
    made.create("w")
    yield made
    made.close()


def test_vfs_loads_no_fuse_binding() -> None:
    code = (
        "import sys, kyfs.vfs.search_tree, kyfs.vfs.versions_tree, kyfs.vfs.control_tree,"
        " kyfs.vfs.openfile; print(any(m in sys.modules for m in ('mfusepy', 'kyfs.fuse.binding')))"
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
    listing = tree.readdir("jwt token")
    assert len(listing) == 1
    name, attrs, _ = listing[0]
    assert stat.S_ISLNK(attrs["st_mode"]) and name.startswith("01-w-notes_jwt")
    assert tree.readlink(f"jwt token/{name}") == "../../w/notes/jwt"
    assert stat.S_ISLNK(tree.getattr(f"jwt token/{name}")["st_mode"])
    assert tree.readdir("") == []  # queries are not listed


def test_control_tree() -> None:
    metrics = Metrics()
    metrics.record("getattr", 0.001, None)
    tree = ControlTree(metrics)
    text = tree.content(METRICS_FILE)
    assert b"kyfs_operations_total" in text
    assert tree.getattr(METRICS_FILE)["st_size"] == len(text)
    with pytest.raises(KeyNotFound):
        tree.getattr("other")


def test_dots_never_carry_inode_zero() -> None:
    assert all(attrs["st_ino"] != 0 for _, attrs, _ in dots(5))
