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
