"""Extended attributes through a real mount, driven by the world's tools (issue 28 item
1): ``setfattr`` and ``getfattr``, ``rsync -aHX`` from a native directory into the mount
and back (``diff -r``, and ``getfattr -d -m - -R`` dumps identical on the three trees),
and ``cp -a`` out of the mount carrying no ``user.kyfs.*`` attribute. The tests run as
whoever runs pytest: as root, trusted.* and security.* attributes travel too. Every test
runs on both engines (tests/conftest.py, both_engines)."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mount

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("both_engines")]

TOOLS = ("setfattr", "getfattr", "rsync")


@pytest.fixture(autouse=True)
def _tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (Debian packages attr, rsync)")


def _run(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (args, done.returncode, done.stderr)
    return done.stdout


def _dump(root: Path) -> list[str]:
    """Every attribute under ``root`` (``getfattr -d -m - -R``), paths relative to it: one
    block per file, sorted (getfattr walks in readdir order, which is ext4's hash order)."""
    text = _run("getfattr", "-R", "-d", "-m", "-", "--absolute-names", ".", cwd=root)
    return sorted(block.strip() for block in text.split("\n\n") if block.strip())


def _native_tree(root: Path) -> None:
    """Files, a directory and a symlink with attributes of every namespace the caller may
    set (binary and empty values, a hard link sharing a node's)."""
    (root / "dir").mkdir(parents=True)
    (root / "plain").write_text("no attributes")
    (root / "f").write_bytes(b"value")
    os.setxattr(root / "f", "user.mime", b"text/plain")
    os.setxattr(root / "f", "user.binary", bytes(range(256)))
    os.setxattr(root / "f", "user.empty", b"")
    os.setxattr(root / "dir", "user.on-dir", b"d")
    (root / "dir" / "big").write_bytes(b"x")
    os.setxattr(root / "dir" / "big", "user.big", b"v" * 3000)  # ext4: a block for all
    os.symlink("f", root / "link")
    os.link(root / "f", root / "dir" / "hard")
    if os.geteuid() == 0:
        os.setxattr(root / "f", "trusted.t", b"root only")
        os.setxattr(root / "dir", "security.s", b"sec")


def test_setfattr_getfattr_and_errnos(mounted: Mount) -> None:
    path = mounted.path / "default" / "f"
    path.write_text("v")
    _run("setfattr", "-n", "user.foo", "-v", "bar", str(path))
    _run("setfattr", "-n", "user.hex", "-v", "0x00ff", str(path))
    dump = _run("getfattr", "-d", "-m", "-", "--absolute-names", str(path))
    assert dump.strip().splitlines()[1:] == ['user.foo="bar"', "user.hex=0sAP8="], dump  # no kyfs
    assert _run("getfattr", "-n", "user.kyfs.created_at", "--only-values", str(path))
    for name, value, flags, wanted in [
        ("foo.bar", b"1", 0, errno.ENOTSUP),
        ("user." + "n" * 251, b"", 0, errno.ERANGE),
        ("user.big", b"x" * 65537, 0, errno.E2BIG),
        ("user.foo", b"1", os.XATTR_CREATE, errno.EEXIST),
        ("user.new", b"1", os.XATTR_REPLACE, errno.ENODATA),
    ]:
        with pytest.raises(OSError) as info:
            os.setxattr(path, name, value, flags)
        assert info.value.errno == wanted, name
    os.symlink("f", mounted.path / "default" / "ln")
    with pytest.raises(OSError) as info:  # user.* is not allowed on symlinks (Linux)
        os.setxattr(mounted.path / "default" / "ln", "user.x", b"1", follow_symlinks=False)
    assert info.value.errno == errno.EPERM
    _run("setfattr", "-x", "user.foo", str(path))
    with pytest.raises(OSError) as info:
        os.getxattr(path, "user.foo")
    assert info.value.errno == errno.ENODATA
    os.link(path, mounted.path / "default" / "hard")
    assert os.getxattr(mounted.path / "default" / "hard", "user.hex") == b"\x00\xff"


def test_rsync_ax_into_the_mount_and_back(mounted: Mount, tmp_path: Path) -> None:
    source, back = tmp_path / "native", tmp_path / "back"
    _native_tree(source)
    inside = mounted.path / "default" / "copy"
    _run("rsync", "-aHX", f"{source}/", f"{inside}/")
    _run("rsync", "-aHX", f"{inside}/", f"{back}/")
    _run("diff", "-r", "--no-dereference", str(source), str(back))
    expected = _dump(source)
    files = [block.splitlines()[0] for block in expected]
    assert {"# file: ./dir", "# file: ./dir/big", "# file: ./f"} <= set(files), files
    assert _dump(inside) == expected
    assert _dump(back) == expected
    assert (inside / "dir" / "hard").stat().st_ino == (inside / "f").stat().st_ino
    _run("rsync", "-aHX", f"{inside}/", f"{back}/")  # again, nothing to change: exit 0


def test_cp_a_out_of_the_mount_carries_no_kyfs_attribute(
    mount_factory: Callable[..., Mount], tmp_path: Path
) -> None:
    mount = mount_factory()
    path = mount.path / "default" / "note"
    path.write_text("kept")
    os.setxattr(path, "user.kyfs.ttl", b"1h")  # kyfs's own, readable by name
    os.setxattr(path, "user.tag", b"t")
    copy = tmp_path / "copy"
    _run("cp", "-a", str(path), str(copy))
    assert os.listxattr(copy) == ["user.tag"]
    assert int(os.getxattr(path, "user.kyfs.ttl")) > 3500


# --- POSIX ACLs (kyfs.core.acl, kyfs.vfs.acls) ------------------------------------------------
def _acl_steps(root: Path) -> None:
    """The same ACL work on any tree: named entries and a mask, chmod after them, a
    default ACL inherited by a file and a directory (under a strict umask, which a
    default ACL overrides), an ACL that says no more than the mode, and a removal."""
    (root / "f").write_text("x")
    (root / "plain").write_text("x")
    (root / "d").mkdir()
    _run("setfacl", "-m", "u:1234:rw,g:1235:r", str(root / "f"))
    _run("chmod", "640", str(root / "f"))
    _run("setfacl", "-m", "u::rwx,g::r-x,o::---", str(root / "plain"))  # the mode only
    _run("setfacl", "-d", "-m", "u:1234:rwx,g::r-x,o::r-x", str(root / "d"))
    old = os.umask(0o077)
    try:
        (root / "d" / "new").write_text("x")
        (root / "d" / "sub").mkdir()
        (root / "strict").write_text("x")  # no default ACL: the umask applies
    finally:
        os.umask(old)
    (root / "gone").write_text("x")
    _run("setfacl", "-m", "u:1234:r", str(root / "gone"))
    _run("setfacl", "-b", str(root / "gone"))


def _acls_of(root: Path) -> list[str]:
    """``getfacl -R`` of ``root``, one block per file, sorted (as :func:`_dump`)."""
    text = _run("getfacl", "-R", "-p", "-n", ".", cwd=root)
    return sorted(block.strip() for block in text.split("\n\n") if block.strip())


@pytest.fixture
def _acl_tools() -> None:
    if shutil.which("setfacl") is None or shutil.which("getfacl") is None:
        pytest.skip("not installed: setfacl, getfacl (Debian package acl)")


@pytest.mark.usefixtures("_acl_tools")
def test_acls_behave_as_on_ext4(mounted: Mount, tmp_path: Path) -> None:
    native, inside = tmp_path / "native", mounted.path / "default" / "acl"
    native.mkdir()
    inside.mkdir()
    os.chmod(inside, 0o755)
    _acl_steps(native)
    _acl_steps(inside)
    expected = _acls_of(native)
    assert "user:1234:rw-" in "".join(expected) and "default:user:1234:rwx" in "".join(expected)
    assert _acls_of(inside) == expected
    modes = {p.name: p.stat().st_mode for p in native.rglob("*")}
    assert {p.name: p.stat().st_mode for p in inside.rglob("*")} == modes
    assert "system.posix_acl_access" not in os.listxattr(inside / "plain")  # not kept


@pytest.mark.usefixtures("_acl_tools")
def test_the_kernel_enforces_acls(mount_factory: Callable[..., Mount]) -> None:
    """A file of mode 0600 that an ACL opens to uid 1234: that user reads it, uid 1235
    does not (EACCES), and after the ACL goes neither does 1234. The users reach the file
    through an open directory descriptor (/proc/self/fd: the folders above the mount are
    root's own)."""
    mount = mount_factory(options="allow_other")
    secret = mount.path / "default" / "secret"
    secret.write_text("for 1234")
    os.chmod(secret, 0o600)
    os.chmod(secret.parent, 0o755)

    def reads(uid: int) -> bool:
        fd = os.open(secret.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            done = subprocess.run(
                ["cat", f"/proc/self/fd/{fd}/secret"], pass_fds=[fd], user=uid, group=uid,
                extra_groups=[], capture_output=True, timeout=30,
            )  # fmt: skip
        finally:
            os.close(fd)
        assert done.returncode == 0 or b"Permission denied" in done.stderr, done.stderr
        return done.returncode == 0

    assert not reads(1234)
    _run("setfacl", "-m", "u:1234:r", str(secret))
    assert reads(1234) and not reads(1235)
    _run("setfacl", "-b", str(secret))
    assert not reads(1234)


@pytest.mark.usefixtures("_acl_tools")
def test_rsync_ahax_keeps_acls_both_ways(mounted: Mount, tmp_path: Path) -> None:
    source, back = tmp_path / "native", tmp_path / "back"
    source.mkdir()
    _acl_steps(source)
    inside = mounted.path / "default" / "copy"
    _run("rsync", "-aHAX", f"{source}/", f"{inside}/")
    _run("rsync", "-aHAX", f"{inside}/", f"{back}/")
    expected = _acls_of(source)
    assert _acls_of(inside) == expected
    assert _acls_of(back) == expected
    assert _dump(back) == _dump(source)
    copied, again = mounted.path / "default" / "cp", tmp_path / "cp-back"
    _run("cp", "-a", "--preserve=all", str(source), str(copied))  # and cp -a, both ways
    _run("cp", "-a", "--preserve=all", str(copied), str(again))
    assert _acls_of(copied) == expected and _acls_of(again) == expected
    assert _dump(again) == _dump(source)


def test_an_unlinked_open_file_answers_no_attribute(mounted: Mount) -> None:
    """libfuse names a file unlinked while open .fuse_hidden*; the kernel still asks for
    its attributes (its ACL, security.capability at a write): ENODATA, and the writes go
    on."""
    path = mounted.path / "default" / "open"
    with open(path, "wb") as handle:
        os.setxattr(path, "user.x", b"1")
        path.unlink()
        handle.write(b"still writable")
        handle.flush()
        with pytest.raises(OSError) as info:
            os.getxattr(handle.fileno(), "user.x")
        assert info.value.errno == errno.ENODATA
        assert os.listxattr(handle.fileno()) == []


def test_a_capability_set_through_another_mount_shows_at_once(
    mount_factory: Callable[..., Mount],
) -> None:
    """The daemon answers a name no node has from memory (the kernel asks for
    security.capability at every write(2)); a capability another daemon (another
    process, as setcap) sets on the same data shows through this mount at the very next
    getxattr, and a write through this mount removes it, as on ext4."""
    if os.geteuid() != 0:
        pytest.skip("only root sets security.capability")
    one, two = mount_factory(), mount_factory(name="second")
    path = one.path / "default" / "f"
    path.write_bytes(b"v")
    with pytest.raises(OSError) as info:
        os.getxattr(path, "security.capability")
    assert info.value.errno == errno.ENODATA
    # vfs_cap_data revision 2: effective, cap_net_bind_service (10) permitted
    capability = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)
    os.setxattr(two.path / "default" / "f", "security.capability", capability)
    assert os.getxattr(path, "security.capability") == capability
    with open(path, "ab") as handle:  # the kernel drops the capability at a write
        handle.write(b" and more")
    with pytest.raises(OSError) as info:
        os.getxattr(two.path / "default" / "f", "security.capability")
    assert info.value.errno == errno.ENODATA
