"""Names are bytes (issue 28 item 4): any name without '/' or NUL, up to 255 bytes, is
stored and listed byte-exact through a real mount on both engines, as on ext4; rsync
carries a tree of such names in and back unchanged; the CLI prints them escaped on a
terminal and as they are into a pipe, and takes them back from the shell."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from kyfs.cli.base import for_terminal
from kyfs.core import names
from tests.conftest import Mount, stop_mount

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("both_engines")]

NAMES = [b"caf\xe9", b"\xff" * 255, b"\x80\xfe", b"half \xe2\x82", b"ok \xe2\x82\xac"]


def _tree(root: bytes) -> dict[bytes, bytes | None]:
    """Relative path -> contents (None for a directory), under ``root``, as bytes."""
    found: dict[bytes, bytes | None] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(directory, name), root)] = None
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, root)] = stream.read()
    return found


def _fill(root: bytes) -> None:
    for name in NAMES:
        os.makedirs(os.path.join(root, b"dir-" + name[:200]), exist_ok=True)
        with open(os.path.join(root, name), "wb") as stream:
            stream.write(b"value of " + name)
        with open(os.path.join(root, b"dir-" + name[:200], name), "wb") as stream:
            stream.write(name)


def test_any_bytes_but_slash_and_nul_are_a_name(
    mount_factory: Callable[..., Mount], tmp_path: Path
) -> None:
    mount = mount_factory()
    workspace = os.fsencode(mount.path / "default")
    native = os.fsencode(tmp_path / "native")
    os.mkdir(native)
    _fill(native)
    _fill(workspace)
    assert sorted(os.listdir(workspace)) == sorted(os.listdir(native))
    assert _tree(workspace) == _tree(native)
    os.rename(os.path.join(workspace, b"caf\xe9"), os.path.join(workspace, b"renamed \xe9"))
    os.rename(os.path.join(native, b"caf\xe9"), os.path.join(native, b"renamed \xe9"))
    for where in (workspace, native):  # the limits ext4 sets, in bytes
        with pytest.raises(OSError) as caught:
            os.open(os.path.join(where, b"\xff" * 256), os.O_WRONLY | os.O_CREAT)
        assert caught.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as refused:  # the 128 code points kept for raw bytes
        os.open(os.path.join(workspace, "x\U0010ff80".encode()), os.O_WRONLY | os.O_CREAT)
    assert refused.value.errno == errno.EILSEQ
    back = os.fsencode(tmp_path / "back")
    subprocess.run(["rsync", "-a", native + b"/", workspace + b"/copy/"], check=True)
    subprocess.run(["rsync", "-a", workspace + b"/copy/", back + b"/"], check=True)
    assert _tree(back) == _tree(native)
    assert subprocess.run(["diff", "-r", native, back]).returncode == 0
    stop_mount(mount)
    again = os.fsencode(mount_factory().path / "default")  # stored, not cached
    assert _tree(os.path.join(again, b"copy")) == _tree(native)


def test_the_cli_shows_raw_bytes_escaped_and_takes_them_back(mounted: Mount) -> None:
    workspace = mounted.path / "default"
    (workspace / os.fsdecode(b"caf\xe9")).write_bytes(b"latin-1")
    piped = mounted.kyfs("keys")  # into a pipe: the bytes as they are, as ls writes them
    assert piped.stdout.splitlines() == [b"caf\xe9"]
    assert mounted.kyfs("get", os.fsdecode(b"caf\xe9")).stdout == b"latin-1"  # $'caf\xe9'
    assert mounted.kyfs("set", os.fsdecode(b"new\xfe"), "v").returncode == 0
    assert sorted(os.listdir(os.fsencode(workspace))) == [b"caf\xe9", b"new\xfe"]
    assert b"new\xfe" in os.listdir(os.fsencode(workspace / ".versions"))
    matches = os.fsencode(mounted.path / ".search" / "latin")
    [link] = os.listdir(matches)
    assert link.endswith(b"-default-caf\xe9")
    with open(os.path.join(matches, link), "rb") as stream:  # the link leads to the file
        assert stream.read() == b"latin-1"

    class Terminal:
        @staticmethod
        def isatty() -> bool:
            return True

    stored = names.from_os(os.fsdecode(b"caf\xe9"))
    assert for_terminal(stored, stream=Terminal()) == "caf\\xe9"  # on a terminal: escaped
