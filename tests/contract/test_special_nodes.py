"""Special nodes in the Workspace contract (issue 28 item 3): FIFOs, UNIX sockets and
device nodes made by mknod(2) are names with attributes and no value, on every engine:
their type and device number survive links, renames, the archive and a restore."""

from __future__ import annotations

import os
import stat

import pytest

from kyfs.core.errors import AlreadyExists, InvalidInput, KeyNotFound
from kyfs.core.nodes import KIND_NAMES, REG, Owner
from kyfs.engine.base import Workspace

NULL = os.makedev(1, 3)
DISK = os.makedev(259, 65537)  # a major and a minor past 8 bits: the wide encoding


@pytest.mark.parametrize(
    ("kind", "rdev", "kept"),
    [
        (stat.S_IFIFO, 0, 0),
        (stat.S_IFSOCK, 0, 0),
        (stat.S_IFCHR, NULL, NULL),
        (stat.S_IFBLK, DISK, DISK),
        (stat.S_IFIFO, NULL, 0),  # only a device node keeps a number
    ],
)
def test_mknod_makes_a_node_of_its_type_without_a_value(
    ws: Workspace, kind: int, rdev: int, kept: int
) -> None:
    entry = ws.mknod("a/node", kind, 0o640, rdev, owner=Owner(1000, 1001))
    assert (entry.kind, entry.mode, entry.rdev, entry.size) == (kind, 0o640, kept, 0)
    assert (entry.uid, entry.gid, entry.nlink) == (1000, 1001, 1)
    assert entry.is_special and not entry.is_dir and not entry.is_symlink
    assert ws.stat("a").is_dir  # the directory above is made, as for any key
    assert [e.key for e in ws.children("a")] == ["a/node"]
    with pytest.raises(InvalidInput, match=KIND_NAMES[kind]):
        ws.get("a/node")
    with pytest.raises(InvalidInput):
        ws.truncate("a/node", 10)
    assert ws.stat("a/node") == entry


def test_mknod_refuses_what_it_does_not_make(ws: Workspace) -> None:
    ws.set("taken", b"value")
    with pytest.raises(AlreadyExists):
        ws.mknod("taken", stat.S_IFIFO, 0o644)
    assert ws.get("taken") == b"value"
    for kind in (REG, stat.S_IFDIR, stat.S_IFLNK, 0o170000):
        with pytest.raises(InvalidInput):
            ws.mknod("bad", kind, 0o644)
    for rdev in (-1, 2**32):
        with pytest.raises(InvalidInput):
            ws.mknod("bad", stat.S_IFCHR, 0o644, rdev)
    with pytest.raises(KeyNotFound):
        ws.stat("bad")


def test_links_renames_and_a_value_set_over_it(ws: Workspace) -> None:
    ws.mknod("fifo", stat.S_IFIFO, 0o600)
    linked = ws.link("fifo", "dir/again")
    assert linked.nlink == 2 and linked.kind == stat.S_IFIFO
    ws.rename("dir/again", "moved")
    assert ws.stat("moved").id == ws.stat("fifo").id
    ws.delete("fifo")
    assert ws.stat("moved").nlink == 1
    ws.set("moved", b"a value replaces the FIFO, as a rename onto it would")
    assert ws.stat("moved").kind == REG
    assert ws.get("moved").startswith(b"a value")


def test_the_archive_keeps_type_and_device_number(ws: Workspace) -> None:
    made = ws.mknod("dev/sda1", stat.S_IFBLK, 0o660, DISK)
    ws.delete("dev/sda1")
    with pytest.raises(KeyNotFound):
        ws.stat("dev/sda1")
    archived = ws.archived("dev/sda1")
    assert [(a.entry.kind, a.entry.rdev) for a in archived] == [(stat.S_IFBLK, DISK)]
    back = ws.restore("dev/sda1")
    assert (back.id, back.kind, back.rdev, back.mode) == (made.id, stat.S_IFBLK, DISK, 0o660)
    assert ws.inode(back.id) == ws.inode(made.id)
