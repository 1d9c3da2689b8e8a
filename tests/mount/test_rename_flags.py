"""renameat2(2)'s flags and O_TMPFILE through a real mount (issue 28 item 5), against
the same calls on the native filesystem in the same run: RENAME_EXCHANGE swaps a file
and a directory with a tree below it, RENAME_NOREPLACE refuses an existing target, and
O_TMPFILE is EOPNOTSUPP (libfuse's high-level API has no tmpfile operation; docs/
design.md) so that programs fall back, as Python's tempfile does."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Mount

pytestmark = pytest.mark.mount

AT_FDCWD = -100
RENAME_NOREPLACE = 1  # linux/fs.h
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old: Path, new: Path, flags: int) -> int:
    """glibc's renameat2(3): 0, or the errno it failed with."""
    done = _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags)
    return 0 if done == 0 else ctypes.get_errno()


def _tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> contents (None for a directory), under ``root``."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def _exercise(root: Path) -> list[object]:
    """The same renameat2 calls on any filesystem; what they returned and left."""
    (root / "a").mkdir()
    (root / "a" / "file").write_bytes(b"file value")
    (root / "b" / "dir" / "deep").mkdir(parents=True)
    (root / "b" / "dir" / "x").write_bytes(b"x")
    (root / "b" / "dir" / "deep" / "y").write_bytes(b"y")
    seen: list[object] = []
    seen.append(renameat2(root / "a" / "file", root / "b" / "dir", RENAME_EXCHANGE))
    seen.append(_tree(root))
    seen.append([os.stat(root / d).st_nlink for d in ("a", "b")])
    seen.append(renameat2(root / "a", root / "b", RENAME_EXCHANGE))  # two directories
    seen.append(_tree(root))
    seen.append(renameat2(root / "a", root / "missing", RENAME_EXCHANGE))
    seen.append(renameat2(root / "a", root / "a" / "dir", RENAME_EXCHANGE))
    seen.append(renameat2(root / "a" / "dir", root / "b", RENAME_NOREPLACE))
    seen.append(renameat2(root / "a", root / "b", RENAME_EXCHANGE | RENAME_NOREPLACE))
    seen.append(renameat2(root / "a" / "dir", root / "c", RENAME_NOREPLACE))
    seen.append(_tree(root))
    return seen


def test_renameat2_flags_do_what_they_do_natively(mounted: Mount, tmp_path: Path) -> None:
    native = tmp_path / "native"
    native.mkdir()
    expected = _exercise(native)
    assert expected[0] == 0 and expected[5] == errno.ENOENT  # the reference itself works
    workspace = mounted.path / "default"
    assert _exercise(workspace) == expected
    # The swap is stored: the CLI (another process, no kernel cache) sees it.
    assert mounted.kyfs("get", "b/file/x").stdout == b"x"
    assert mounted.kyfs("get", "c").stdout == b"file value"


def test_o_tmpfile_is_refused_and_tools_fall_back(mounted: Mount) -> None:
    workspace = mounted.path / "default"
    with pytest.raises(OSError) as caught:
        os.open(workspace, os.O_TMPFILE | os.O_RDWR, 0o600)
    assert caught.value.errno == errno.EOPNOTSUPP
    with tempfile.TemporaryFile(dir=workspace) as unnamed:  # falls back to a named file
        unnamed.write(b"scratch")
        unnamed.seek(0)
        assert unnamed.read() == b"scratch"
    assert os.listdir(workspace) == []  # and removed it at once
    done = subprocess.run(
        ["sh", "-c", 'mktemp -p "$1" && sort -T "$1" /etc/passwd >/dev/null', "sh", workspace],
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
