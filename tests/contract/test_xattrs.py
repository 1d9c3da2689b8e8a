"""Extended attributes through kyfs.engine.base.Workspace, on every engine: stored per
node (hard links share them), ext4's limits and setxattr(2)'s flags, kept while the node
waits in the archive and gone with it (fsck finds no attribute of no node)."""

from __future__ import annotations

import errno
import time

import pytest

from kyfs.core import xattrs
from kyfs.core.errors import (
    AlreadyExists,
    AttributeNameTooLong,
    AttributeNotSupported,
    AttributesFull,
    AttributeTooLarge,
    KeyNotFound,
    NoAttribute,
)
from kyfs.engine.base import Engine, Workspace
from kyfs.engine.sqlite.engine import SqliteEngine

STRAY = "extended attributes of no node"
NOTIFY_WAIT_S = 5.0  # seconds a PostgreSQL notification may take to arrive (a loaded machine)


def test_store_list_read_and_remove(ws: Workspace) -> None:
    ws.set("f", b"v")
    ws.mkdir("d")
    before = ws.stat("f").ctime_ns
    ws.set_xattr("f", "user.b", b"2")
    ws.set_xattr("f", "user.a", b"\x00\xff binary")
    ws.set_xattr("f", "trusted.t", b"")  # an empty value is a value
    ws.set_xattr("d", "security.s", b"dir")
    ws.set_xattr("", "user.top", b"workspace top")
    assert ws.xattr_names("f") == ["trusted.t", "user.a", "user.b"]  # by their bytes
    assert ws.get_xattr("f", "user.a") == b"\x00\xff binary"
    assert ws.get_xattr("f", "trusted.t") == b""
    assert ws.xattr_names("d") == ["security.s"] and ws.xattr_names("") == ["user.top"]
    assert ws.stat("f").ctime_ns >= before
    ws.set_xattr("f", "user.b", b"replaced")
    assert ws.get_xattr("f", "user.b") == b"replaced"
    ws.remove_xattr("f", "user.b")
    assert ws.xattr_names("f") == ["trusted.t", "user.a"]
    with pytest.raises(NoAttribute) as missing:
        ws.get_xattr("f", "user.b")
    assert missing.value.errno == errno.ENODATA
    with pytest.raises(NoAttribute):
        ws.remove_xattr("f", "user.b")
    with pytest.raises(KeyNotFound):
        ws.xattr_names("nothing")
    with pytest.raises(KeyNotFound):
        ws.set_xattr("nothing", "user.a", b"")


def test_flags_create_and_replace(ws: Workspace) -> None:
    ws.set("f", b"v")
    with pytest.raises(NoAttribute):
        ws.set_xattr("f", "user.a", b"1", xattrs.XATTR_REPLACE)
    ws.set_xattr("f", "user.a", b"1", xattrs.XATTR_CREATE)
    with pytest.raises(AlreadyExists) as exists:
        ws.set_xattr("f", "user.a", b"2", xattrs.XATTR_CREATE)
    assert exists.value.errno == errno.EEXIST
    ws.set_xattr("f", "user.a", b"3", xattrs.XATTR_REPLACE)
    assert ws.get_xattr("f", "user.a") == b"3"


def test_limits_and_namespaces_as_ext4(ws: Workspace) -> None:
    ws.set("f", b"v")
    longest = "user." + "n" * (xattrs.NAME_MAX - 5)
    ws.set_xattr("f", longest, b"x" * xattrs.SIZE_MAX)
    assert len(ws.get_xattr("f", longest)) == xattrs.SIZE_MAX
    with pytest.raises(AttributeNameTooLong) as long_name:
        ws.set_xattr("f", longest + "n", b"")
    assert long_name.value.errno == errno.ERANGE
    with pytest.raises(AttributeTooLarge) as big:
        ws.set_xattr("f", "user.big", b"x" * (xattrs.SIZE_MAX + 1))
    assert big.value.errno == errno.E2BIG
    for name in ("foo.bar", "system.other", "user.kyfs.ttl", "user.kyfs.other"):
        with pytest.raises(AttributeNotSupported) as refused:
            ws.set_xattr("f", name, b"1")
        assert refused.value.errno == errno.ENOTSUP
    # a name that is not UTF-8 (mfusepy hands it over with surrogateescape) round-trips
    odd = xattrs.decode(b"user.\xff\xfe")
    ws.set_xattr("f", odd, b"odd")
    assert odd in ws.xattr_names("f") and ws.get_xattr("f", odd) == b"odd"
    assert ws.xattr_names("f") == sorted(ws.xattr_names("f"), key=xattrs.encode)


def test_names_of_one_node_stay_within_xattr_list_max(ws: Workspace) -> None:
    ws.set("f", b"v")
    name_bytes = 0
    count = 0
    while True:  # names of 255 bytes, 256 with the NUL: 256 of them fill 64 KiB
        name = f"user.{count:05d}".ljust(xattrs.NAME_MAX, "n")
        if name_bytes + len(name) + 1 > xattrs.LIST_MAX:
            break
        ws.set_xattr("f", name, b"")
        name_bytes += len(name) + 1
        count += 1
    with pytest.raises(AttributesFull) as full:
        ws.set_xattr("f", "user.one-more", b"")
    assert full.value.errno == errno.ENOSPC
    ws.set_xattr("f", "user.00000".ljust(xattrs.NAME_MAX, "n"), b"a new value")  # not new


def test_hard_links_share_them(ws: Workspace) -> None:
    ws.set("a", b"v")
    ws.link("a", "b")
    ws.set_xattr("b", "user.shared", b"1")
    assert ws.get_xattr("a", "user.shared") == b"1"
    ws.delete("b")  # a name goes, the node stays
    assert ws.get_xattr("a", "user.shared") == b"1"
    ws.rename("a", "moved")
    assert ws.xattr_names("moved") == ["user.shared"]


def test_kept_in_the_archive_and_gone_with_the_node(ws: Workspace) -> None:
    ws.set("k", b"v")
    ws.set_xattr("k", "user.kept", b"1")
    ws.delete("k")
    assert ws.check() == []  # an archived node keeps its attributes
    ws.restore("k")
    assert ws.get_xattr("k", "user.kept") == b"1"
    ws.set("n", b"other")  # a new node under another name: none of them
    assert ws.xattr_names("n") == []
    ws.delete("k")
    ws.purge_archive(2**62)
    assert ws.check() == []  # no attribute of no node left behind
    ws.set("k", b"again")
    assert ws.xattr_names("k") == []


def test_released_undo_and_a_replaced_key_free_them(ws: Workspace) -> None:
    ws.set("a", b"1")
    ws.set_xattr("a", "user.x", b"1")
    ws.set("b", b"2")
    ws.set_xattr("b", "user.y", b"2")
    ws.rename("b", "a")  # the old node of "a" goes to the archive
    assert ws.xattr_names("a") == ["user.y"]
    ws.delete("a")
    ws._release_undo()  # type: ignore[attr-defined]
    assert ws.archived() == [] and ws.check() == []


def test_fsck_finds_attributes_of_no_node(ws: Workspace) -> None:
    """The check can fail: a row left behind (written past the engine) is reported, and
    repair drops it."""
    ws.set("k", b"v")
    with ws._atomic() as conn:  # type: ignore[attr-defined]
        conn.execute(
            "INSERT INTO xattrs (node, name, value) VALUES (?, ?, ?)", (999999, b"user.x", b"")
        )
    assert any(STRAY in problem for problem in ws.check())
    assert any(STRAY in done for done in ws.repair())
    assert ws.check() == []


def test_an_attribute_and_the_mode_in_one_change(ws: Workspace) -> None:
    """What a POSIX ACL set does (kyfs.vfs.acls): store it (or drop it) and set the mode
    together; ACL names are stored, any other system.* name is not."""
    ws.set("f", b"v")
    ws.set_xattr_and_mode("f", "system.posix_acl_access", b"\x02\x00\x00\x00", 0o2750)
    assert ws.stat("f").mode == 0o2750
    assert ws.get_xattr("f", "system.posix_acl_access") == b"\x02\x00\x00\x00"
    ws.set_xattr_and_mode("f", "system.posix_acl_access", None, 0o640)
    assert ws.stat("f").mode == 0o640 and ws.xattr_names("f") == []
    ws.set_xattr_and_mode("f", "system.posix_acl_access", None, 0o600)  # none: no error
    with pytest.raises(AttributeNotSupported):
        ws.set_xattr_and_mode("f", "system.other", b"", 0o600)


def test_names_in_use_follow_this_and_other_connections(
    ws: Workspace, engine: Engine, peer: Engine
) -> None:
    """xattr_in_use answers from memory on both engines (the kernel asks for
    security.capability at every write): False only for a name no node has; a name set
    through this workspace is in use at once, one set through another connection
    (another process) as soon as the engine learns of that commit: at once on SQLite
    (``PRAGMA data_version``), when its notification arrives on PostgreSQL (LISTEN: the
    commit's own moment, give or take the server's delivery)."""
    ws.set("f", b"v")
    assert not ws.xattr_in_use("security.capability")
    ws.set_xattr("f", "user.mine", b"1")
    assert ws.xattr_in_use("user.mine")
    with peer.using("w") as other:
        other.set_xattr("f", "security.capability", b"cap")
        other.set_xattr_and_mode("f", "system.posix_acl_access", b"\x02\x00\x00\x00", 0o640)
    if isinstance(engine, SqliteEngine):
        assert ws.xattr_in_use("security.capability")
    else:
        deadline = time.monotonic() + NOTIFY_WAIT_S
        while not ws.xattr_in_use("security.capability") and time.monotonic() < deadline:
            time.sleep(0.001)
        assert ws.xattr_in_use("security.capability")
    assert ws.get_xattr("f", "security.capability") == b"cap"
    assert ws.xattr_in_use("system.posix_acl_access")
    assert not ws.xattr_in_use("user.other")
