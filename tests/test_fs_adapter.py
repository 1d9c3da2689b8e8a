"""The FUSE operations class called directly (no mount): paths in, stat dicts and errnos out."""

from __future__ import annotations

import errno
import os
import stat

import pytest

fs = pytest.importorskip("kyfs.fuse.adapter", reason="libfuse3 is not installed", exc_type=OSError)
from kyfs.core.errors import NoSpace  # noqa: E402
from tests.conftest import fuse_errno  # noqa: E402


def _write_file(ops: fs.KyfsOperations, path: str, data: bytes) -> None:
    fh = ops.create(path, 0o644, os.O_WRONLY)
    ops.write(path, data, 0, fh)
    ops.flush(path, fh)
    ops.release(path, fh)


def _read_file(ops: fs.KyfsOperations, path: str) -> bytes:
    fh = ops.open(path, os.O_RDONLY)
    try:
        return ops.read(path, 1 << 20, 0, fh)
    finally:
        ops.release(path, fh)


def test_root_lists_workspaces_as_directories(ops: fs.KyfsOperations) -> None:
    ops.mkdir("/other", 0o755)
    listing = ops.readdir("/", 0)
    entries = {item[0]: item[1] for item in listing if item[0] not in (".", "..")}
    assert set(entries) == {"ws", "other"}
    assert all(item[1]["st_ino"] != 0 for item in listing)  # glibc skips d_ino 0
    assert all(stat.S_ISDIR(e["st_mode"]) for e in entries.values())
    assert stat.S_ISDIR(ops.getattr("/")["st_mode"])


def test_file_round_trip_and_stat(ops: fs.KyfsOperations) -> None:
    _write_file(ops, "/ws/user.name", b"Alice\n")
    attrs = ops.getattr("/ws/user.name")
    assert stat.S_ISREG(attrs["st_mode"]) and attrs["st_size"] == 6
    assert _read_file(ops, "/ws/user.name") == b"Alice\n"
    listing = {item[0]: item[1] for item in ops.readdir("/ws", 0)}
    assert listing["user.name"] == {"st_mode": stat.S_IFREG | 0o644, "st_ino": attrs["st_ino"]}
    assert attrs["st_uid"] == os.getuid() and attrs["st_nlink"] == 1


def test_size_of_open_dirty_file_is_exact(ops: fs.KyfsOperations) -> None:
    fh = ops.create("/ws/f", 0o644, os.O_WRONLY)
    ops.write("/ws/f", b"12345", 0, fh)
    assert ops.getattr("/ws/f")["st_size"] == 5  # before close
    ops.release("/ws/f", fh)


def test_open_with_truncate(ops: fs.KyfsOperations) -> None:
    _write_file(ops, "/ws/f", b"long old content")
    fh = ops.open("/ws/f", os.O_WRONLY | os.O_TRUNC)
    ops.write("/ws/f", b"new", 0, fh)
    ops.release("/ws/f", fh)
    assert _read_file(ops, "/ws/f") == b"new"


def test_errnos(ops: fs.KyfsOperations) -> None:
    assert fuse_errno(ops.getattr, "/missing") == errno.ENOENT
    assert fuse_errno(ops.getattr, "/ws/missing") == errno.ENOENT
    assert fuse_errno(ops.getattr, "/bad name!") == errno.ENOENT
    assert fuse_errno(ops.create, "/rootfile", 0o644, 0) == errno.EPERM
    assert fuse_errno(ops.mkdir, "/bad name!", 0o755) == errno.EINVAL
    assert fuse_errno(ops.mkdir, "/ws", 0o755) == errno.EEXIST
    assert fuse_errno(ops.create, "/ws/" + "x" * 256, 0o644, 0) == errno.ENAMETOOLONG
    bad = "/ws/x\U0010ff80"  # a code point kyfs keeps for raw bytes (kyfs.core.names)
    assert fuse_errno(ops.create, bad, 0o644, 0) == errno.EILSEQ
    _write_file(ops, "/ws/d/f", b"x")
    assert fuse_errno(ops.rmdir, "/ws/d") == errno.ENOTEMPTY
    assert fuse_errno(ops.rmdir, "/ws") == errno.ENOTEMPTY
    assert fuse_errno(ops.unlink, "/ws/d") == errno.EISDIR
    assert fuse_errno(ops.open, "/ws/d", os.O_RDONLY) == errno.EISDIR
    assert fuse_errno(ops.create, "/ws/d/f/g", 0o644, 0) == errno.ENOTDIR
    assert fuse_errno(ops.create, "/ws/d/f", 0o644, os.O_EXCL) == errno.EEXIST
    assert fuse_errno(ops.rename, "/ws/d", "/ws/d/sub") == errno.EINVAL
    ops.mkdir("/other", 0o755)
    assert fuse_errno(ops.rename, "/ws/d/f", "/other/f") == errno.EXDEV
    assert fuse_errno(ops.rename, "/ws/d/f", "/ws/g", fs.RENAME_EXCHANGE) == errno.ENOENT
    assert fuse_errno(ops.rename, "/ws", "/other", fs.RENAME_EXCHANGE) == errno.EINVAL
    assert fuse_errno(ops.rename, "/ws/d/f", "/other/f", fs.RENAME_EXCHANGE) == errno.EXDEV
    _write_file(ops, "/ws/g", b"y")
    assert fuse_errno(ops.rename, "/ws/d/f", "/ws/g", fs.RENAME_NOREPLACE) == errno.EEXIST
    assert fuse_errno(ops.link, "/other/h", "/ws/g") == errno.EXDEV
    assert fuse_errno(ops.link, "/ws/h", "/ws/d") == errno.EPERM  # a directory
    assert fuse_errno(ops.readlink, "/ws/g") == errno.EINVAL
    assert fuse_errno(ops.mknod, "/fifo", stat.S_IFIFO | 0o644, 0) == errno.EPERM  # the root
    assert fuse_errno(ops.mknod, "/ws/g", stat.S_IFIFO | 0o644, 0) == errno.EEXIST
    assert fuse_errno(ops.mknod, "/ws/odd", 0o170000 | 0o644, 0) == errno.EINVAL
    assert fuse_errno(ops.read, "/ws/g", 10, 0, 999) == errno.EBADF


def test_workspace_lifecycle_at_root(ops: fs.KyfsOperations) -> None:
    ops.mkdir("/beta", 0o755)
    _write_file(ops, "/beta/k", b"v")
    ops.rename("/beta", "/gamma")
    assert _read_file(ops, "/gamma/k") == b"v"
    assert fuse_errno(ops.getattr, "/beta") == errno.ENOENT
    ops.unlink("/gamma/k")
    ops.rmdir("/gamma")
    assert fuse_errno(ops.getattr, "/gamma") == errno.ENOENT


def test_rename_directory_inside_workspace(ops: fs.KyfsOperations) -> None:
    _write_file(ops, "/ws/a/b/c", b"1")
    _write_file(ops, "/ws/a/d", b"2")
    ops.rename("/ws/a", "/ws/z")
    assert _read_file(ops, "/ws/z/b/c") == b"1"
    assert _read_file(ops, "/ws/z/d") == b"2"
    assert fuse_errno(ops.getattr, "/ws/a") == errno.ENOENT


def test_truncate_chmod_utimens(ops: fs.KyfsOperations) -> None:
    _write_file(ops, "/ws/f", b"hello")
    ops.truncate("/ws/f", 8)
    assert _read_file(ops, "/ws/f") == b"hello\0\0\0"
    ops.chmod("/ws/f", 0o100600)
    assert stat.S_IMODE(ops.getattr("/ws/f")["st_mode"]) == 0o600
    ops.utimens("/ws/f", (5_000_000_000, fs.UTIME_OMIT))
    attrs = ops.getattr("/ws/f")
    assert attrs["st_atime"] == 5_000_000_000
    assert attrs["st_mtime"] != 5_000_000_000


def test_tar_x_of_a_file_is_two_transactions_and_its_attributes_show_at_once(
    ops: fs.KyfsOperations, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What tar x does per file: create, write, futimens, fchown, fchmod, close. The
    times, owner and mode set on the open file show at once, and land with the data in
    the commit at close: one transaction for the create, one for the rest."""
    store = ops.mount._workspace("ws")
    transactions = []
    atomic = store._atomic

    def counted():  # type: ignore[no-untyped-def]
        transactions.append(1)
        return atomic()

    monkeypatch.setattr(store, "_atomic", counted)
    fh = ops.create("/ws/f", 0o600, os.O_WRONLY | os.O_EXCL)
    stats = []
    stat_of = store.stat
    monkeypatch.setattr(store, "stat", lambda key: stats.append(key) or stat_of(key))
    created = ops.getattr("/ws/f", fh)  # libfuse asks right after the create: no lookup
    assert stats == [] and stat.S_IMODE(created["st_mode"]) == 0o600
    ops.write("/ws/f", b"hello", 0, fh)
    ops.utimens("/ws/f", (fs.UTIME_OMIT, 7_000_000_000))
    ops.chown("/ws/f", 1234, 5678)
    ops.chmod("/ws/f", 0o100644)
    stats.clear()
    assert stat.S_IMODE(ops.getattr("/ws/f", fh)["st_mode"]) == 0o644  # chmod's own reply
    assert stats == []
    shown = ops.getattr("/ws/f")  # a later request: the file made here, still open
    assert (shown["st_mtime"], shown["st_uid"], shown["st_gid"]) == (7_000_000_000, 1234, 5678)
    assert stat.S_IMODE(shown["st_mode"]) == 0o644 and shown["st_size"] == 5
    assert len(transactions) == 1 and stats == []  # the create; no lookup (ops._made)
    ops.flush("/ws/f", fh)
    ops.release("/ws/f", fh)
    assert len(transactions) == 2
    stored = store.stat("f")
    assert (stored.mtime_ns, stored.uid, stored.gid, stored.mode) == (
        7_000_000_000,
        1234,
        5678,
        0o644,
    )
    assert stored.ctime_ns >= shown["st_ctime"] and _read_file(ops, "/ws/f") == b"hello"


def test_a_create_reply_never_outlives_its_request(ops: fs.KyfsOperations) -> None:
    """The attributes kept for the getattr of a create's own request are forgotten by the
    next operation: a later getattr sees the write."""
    fh = ops.create("/ws/f", 0o644, os.O_WRONLY)
    ops.write("/ws/f", b"12345", 0, fh)
    assert ops.getattr("/ws/f", fh)["st_size"] == 5
    ops.release("/ws/f", fh)


def test_a_write_after_utimens_on_an_open_file_sets_the_mtime_again(
    ops: fs.KyfsOperations,
) -> None:
    fh = ops.create("/ws/f", 0o644, os.O_WRONLY)
    ops.write("/ws/f", b"a", 0, fh)
    ops.utimens("/ws/f", (5_000_000_000, 6_000_000_000))
    ops.write("/ws/f", b"b", 1, fh)  # POSIX: a write updates the mtime
    ops.release("/ws/f", fh)
    attrs = ops.getattr("/ws/f")
    assert attrs["st_atime"] == 5_000_000_000 and attrs["st_mtime"] > 6_000_000_000


def test_unlinked_while_open_does_not_come_back(ops: fs.KyfsOperations) -> None:
    fh = ops.create("/ws/tmp", 0o644, os.O_WRONLY)
    ops.write("/ws/tmp", b"data", 0, fh)
    ops.unlink("/ws/tmp")
    ops.release("/ws/tmp", fh)
    assert fuse_errno(ops.getattr, "/ws/tmp") == errno.ENOENT
    names = [item[0] if isinstance(item, tuple) else item for item in ops.readdir("/ws", 0)]
    assert names == [".", ".."]


def test_statfs_counts_nodes(ops: fs.KyfsOperations) -> None:
    _write_file(ops, "/ws/a", b"1")
    _write_file(ops, "/ws/b/c", b"2")
    result = ops.statfs("/")
    # IUsed (df -i) = f_files - f_ffree: the mount's root, the workspace's top, a, b, b/c
    assert result["f_files"] - result["f_ffree"] == 5
    assert result["f_blocks"] > 0 and result["f_namemax"] == 255


def test_one_reading_of_a_directory_sees_one_listing(ops: fs.KyfsOperations) -> None:
    """READDIRPLUS comes in pieces: each handle keeps the listing made at offset 0, so an
    entry removed meanwhile (rm -r reads and unlinks at once) shifts nothing; a new
    handle sees the change, and releasedir forgets the kept listing."""
    for name in "abcd":
        _write_file(ops, f"/ws/d/{name}", b"x")
    fh = ops.opendir("/ws/d")
    first = ops.listing_from("/ws/d", fh, 0)
    assert [item[0] for item in first] == [".", "..", "a", "b", "c", "d"]
    assert first[2][1]["st_size"] == 1 and first[2][1]["st_nlink"] == 1  # every attribute
    ops.unlink("/ws/d/a")
    assert [item[0] for item in ops.listing_from("/ws/d", fh, 4)] == ["c", "d"]
    other = ops.opendir("/ws/d")
    assert [item[0] for item in ops.listing_from("/ws/d", other, 0)][2:] == ["b", "c", "d"]
    ops.releasedir("/ws/d", fh)
    ops.releasedir("/ws/d", other)
    assert not ops.mount._listings


def test_unexpected_exceptions_answer_eio_with_a_log_line(
    ops: fs.KyfsOperations, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sqlite3 error that escaped the engine (or a bug) answers EIO, not mfusepy's
    EINVAL, and logs the workspace, key and cause (issue 25)."""
    import sqlite3

    _write_file(ops, "/ws/k", b"v")
    store = ops.workspaces.open("ws")

    def broken(*args: object, **kwargs: object) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(store, "stat", broken)
    with caplog.at_level("WARNING", logger="kyfs.fuse.adapter"):
        assert fuse_errno(ops.getattr, "/ws/k") == errno.EIO
        assert fuse_errno(ops.getattr, "/ws/k") == errno.EIO
    lines = [r for r in caplog.records if "workspace ws: key k: getattr answered EIO" in r.message]
    assert len(lines) == 1 and "DatabaseError: database disk image is malformed" in lines[0].message
    assert lines[0].levelname == "ERROR" and lines[0].exc_info is not None


def test_eio_lines_are_rate_limited_per_cause(caplog: pytest.LogCaptureFixture) -> None:
    """One line per (workspace, key, cause) every window; the next says how many were
    held back; another key or cause has lines of its own."""
    from kyfs.core.errors import StorageError
    from kyfs.fuse.errorlog import EioLog

    now = [0.0]
    errors = EioLog(window_s=10.0, clock=lambda: now[0])
    broken = StorageError("storage error: database disk image is malformed")
    with caplog.at_level("WARNING", logger="kyfs.fuse.adapter"):
        assert errors.report("read", "ws", "a", errno.EIO, broken)
        for _ in range(3):
            now[0] += 1.0
            assert not errors.report("read", "ws", "a", errno.EIO, broken)
        assert errors.report("read", "ws", "b", errno.EIO, broken)  # another key
        now[0] += 10.0
        assert errors.report("read", "ws", "a", errno.EIO, broken)
    messages = [r.message for r in caplog.records]
    assert messages[0] == (
        "workspace ws: key a: read answered EIO: storage error: database disk image is malformed"
    )
    assert messages[1].startswith("workspace ws: key b: ")
    assert messages[2].endswith("(3 more like it in the last 10 s not logged)")
    assert len(messages) == 3


# --- extended attributes (kyfs.core.xattrs) ------------------------------------------------
def _as_uid(ops: fs.KyfsOperations, monkeypatch: pytest.MonkeyPatch, uid: int) -> None:
    """Serve the next requests as if process ``uid`` made them."""
    monkeypatch.setattr(ops.mount, "context", lambda: (uid, uid, os.getpid()))


def test_xattrs_namespaces_and_who_may(
    ops: fs.KyfsOperations, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_file(ops, "/ws/f", b"v")
    ops.symlink("/ws/ln", "f")
    _as_uid(ops, monkeypatch, 0)
    ops.setxattr("/ws/f", "user.u", b"1", 0)
    ops.setxattr("/ws/f", "trusted.t", b"2", 0)
    ops.setxattr("/ws/f", "security.s", b"3", 0)
    ops.setxattr("/ws/ln", "trusted.on-link", b"4", 0)  # trusted.* is on any node
    assert ops.listxattr("/ws/f") == ["security.s", "trusted.t", "user.u"]
    assert ops.getxattr("/ws/f", "trusted.t") == b"2"
    _as_uid(ops, monkeypatch, 1000)  # as Linux: trusted.* is root's, unseen by others
    assert ops.listxattr("/ws/f") == ["security.s", "user.u"]
    assert fuse_errno(ops.getxattr, "/ws/f", "trusted.t") == errno.ENODATA
    assert fuse_errno(ops.setxattr, "/ws/f", "trusted.t", b"x", 0) == errno.EPERM
    assert fuse_errno(ops.removexattr, "/ws/f", "trusted.t") == errno.EPERM
    assert ops.getxattr("/ws/f", "security.s") == b"3"  # security.*: read by all,
    assert fuse_errno(ops.setxattr, "/ws/f", "security.s", b"x", 0) == errno.EPERM  # set by root
    assert fuse_errno(ops.setxattr, "/ws/ln", "user.u", b"x", 0) == errno.EPERM  # not on links
    assert fuse_errno(ops.getxattr, "/ws/ln", "user.u") == errno.ENODATA
    for name in ("foo.bar", "system.posix_acl_access", "system.posix_acl_default"):
        assert fuse_errno(ops.setxattr, "/ws/f", name, b"x", 0) == errno.ENOTSUP, name
    assert fuse_errno(ops.getxattr, "/ws/f", "foo.bar") == errno.ENOTSUP
    assert fuse_errno(ops.getxattr, "/ws/f", "system.posix_acl_access") == errno.ENODATA
    assert fuse_errno(ops.getxattr, "/ws/f", "user.none") == errno.ENODATA
    assert fuse_errno(ops.setxattr, "/ws/f", "user.u", b"x", 1) == errno.EEXIST  # XATTR_CREATE
    assert fuse_errno(ops.setxattr, "/ws/f", "user.v", b"x", 2) == errno.ENODATA  # XATTR_REPLACE
    assert fuse_errno(ops.setxattr, "/ws/f", "user." + "n" * 251, b"", 0) == errno.ERANGE
    assert fuse_errno(ops.setxattr, "/ws/f", "user.big", b"x" * 65537, 0) == errno.E2BIG
    assert fuse_errno(ops.setxattr, "/ws/.versions/f", "user.u", b"x", 0) == errno.EROFS
    assert fuse_errno(ops.getxattr, "/ws/nothing", "user.u") == errno.ENOENT


def test_kyfs_own_xattrs_answer_by_name_and_are_never_listed(ops: fs.KyfsOperations) -> None:
    _write_file(ops, "/ws/f", b"v")
    ops.mkdir("/ws/d", 0o755)
    ops.setxattr("/ws/f", "user.kyfs.ttl", b"1h", 0)
    assert 3590 <= int(ops.getxattr("/ws/f", "user.kyfs.ttl")) <= 3600
    assert ops.getxattr("/ws/f", "user.kyfs.created_at").endswith(b"Z")
    assert ops.listxattr("/ws/f") == []  # so cp -a and rsync -X never carry them
    assert fuse_errno(ops.setxattr, "/ws/f", "user.kyfs.other", b"x", 0) == errno.ENOTSUP
    assert fuse_errno(ops.setxattr, "/ws/d", "user.kyfs.ttl", b"1h", 0) == errno.ENOTSUP
    assert fuse_errno(ops.removexattr, "/ws/f", "user.kyfs.other") == errno.ENODATA
    ops.removexattr("/ws/f", "user.kyfs.ttl")
    assert fuse_errno(ops.getxattr, "/ws/f", "user.kyfs.ttl") == errno.ENODATA
    ops.setxattr("/ws/d", "user.on-dir", b"1", 0)  # a directory holds user.* too
    assert ops.listxattr("/ws/d") == ["user.on-dir"]
    ops.link("/ws/f2", "/ws/f")
    ops.setxattr("/ws/f2", "user.shared", b"1", 0)
    assert ops.getxattr("/ws/f", "user.shared") == b"1"  # per node: links share them


def test_acls_keep_the_mode_and_are_inherited(
    ops: fs.KyfsOperations, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the kernel enforcing ACLs (FUSE_CAP_POSIX_ACL), the daemon keeps them: the
    mode follows a set, chmod rewrites the ACL, a default ACL is inherited, and an ACL
    that says no more than the mode is not kept (kyfs.core.acl)."""
    from kyfs.core import acl

    ops.acls = True
    _as_uid(ops, monkeypatch, 0)
    _write_file(ops, "/ws/f", b"v")
    named = [acl.Rule(acl.USER_OBJ, 6), acl.Rule(acl.USER, 4, 1234), acl.Rule(acl.GROUP_OBJ, 4)]
    named += [acl.Rule(acl.MASK, 6), acl.Rule(acl.OTHER, 0)]
    ops.setxattr("/ws/f", acl.ACCESS, acl.pack(named), 0)
    assert ops.getattr("/ws/f")["st_mode"] & 0o777 == 0o660  # the mask is the group's
    assert acl.ACCESS in ops.listxattr("/ws/f")
    ops.chmod("/ws/f", 0o100640)
    assert acl.mode_bits(acl.parse(ops.getxattr("/ws/f", acl.ACCESS))) == 0o640
    base = [acl.Rule(acl.USER_OBJ, 7), acl.Rule(acl.GROUP_OBJ, 0), acl.Rule(acl.OTHER, 0)]
    ops.setxattr("/ws/f", acl.ACCESS, acl.pack(base), 0)
    assert ops.getattr("/ws/f")["st_mode"] & 0o777 == 0o700
    assert fuse_errno(ops.getxattr, "/ws/f", acl.ACCESS) == errno.ENODATA  # the mode says it
    assert fuse_errno(ops.setxattr, "/ws/f", acl.DEFAULT, acl.pack(base), 0) == errno.EACCES
    assert fuse_errno(ops.setxattr, "/ws/f", acl.ACCESS, b"\x02\x00\x00\x00\x01", 0) == errno.EINVAL
    ops.mkdir("/ws/d", 0o755)
    ops.setxattr("/ws/d", acl.DEFAULT, acl.pack(named), 0)
    ops.release("/ws/d/new", ops.create("/ws/d/new", 0o100644, os.O_WRONLY))
    assert ops.getattr("/ws/d/new")["st_mode"] & 0o777 == 0o640  # 0644 narrowed by it
    assert ops.getxattr("/ws/d/new", acl.ACCESS) == acl.pack(
        [*named[:3], acl.Rule(acl.MASK, 4), acl.Rule(acl.OTHER, 0)]
    )
    ops.mkdir("/ws/d/sub", 0o755)
    assert ops.getxattr("/ws/d/sub", acl.DEFAULT) == acl.pack(named)  # passed on
    store = ops.workspaces.open("ws")

    def full(*args: object) -> None:
        raise NoSpace("the disk is full")

    with monkeypatch.context() as patch:  # the ACL cannot be stored: the node is
        patch.setattr(store, "set_xattr_and_mode", full)  # never open wider than it
        assert fuse_errno(ops.mknod, "/ws/d/fifo", stat.S_IFIFO | 0o666, 0) == errno.ENOSPC
    assert ops.getattr("/ws/d/fifo")["st_mode"] & 0o077 == 0  # owner-only, not group rw
    _as_uid(ops, monkeypatch, 1000)  # not the owner
    assert fuse_errno(ops.setxattr, "/ws/d", acl.DEFAULT, acl.pack(named), 0) == errno.EPERM
    ops.acls = False  # a kernel that does not enforce them: none is served or taken
    assert acl.ACCESS not in ops.listxattr("/ws/d/new")
    assert fuse_errno(ops.setxattr, "/ws/f", acl.ACCESS, acl.pack(named), 0) == errno.ENOTSUP


def test_only_a_handle_that_may_write_needs_a_flush(ops: fs.KyfsOperations) -> None:
    """A read-only handle's close has nothing to commit (the daemon opens it noflush); one
    that may write, or truncated at open, has; a virtual file's never. A writer's buffered
    value is committed by its own release, whatever read-only handles did meanwhile."""
    _write_file(ops, "/ws/f", b"v")
    reader = ops.open("/ws/f", os.O_RDONLY)
    assert not ops.flushes(reader, os.O_RDONLY)
    assert ops.flushes(reader, os.O_RDONLY | os.O_TRUNC)
    writer = ops.open("/ws/f", os.O_WRONLY)
    assert ops.flushes(writer, os.O_WRONLY) and ops.flushes(writer, os.O_RDWR)
    ops.write("/ws/f", b"new", 0, writer)
    ops.release("/ws/f", reader)  # (no flush came first)
    assert ops.read("/ws/f", 10, 0, writer) == b"new"
    ops.release("/ws/f", writer)
    assert _read_file(ops, "/ws/f") == b"new"
    virtual = ops.open("/.kyfs/metrics", os.O_RDONLY)
    assert not ops.flushes(virtual, os.O_RDONLY)
    ops.release("/.kyfs/metrics", virtual)
