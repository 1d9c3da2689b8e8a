"""kyfs.vfs.mount.Mount without libfuse: the mount's decisions in kyfs's own terms (paths
in, stat dicts and handles out, kyfs errors with their errnos), as another binding than
mfusepy would drive it. Nothing here imports kyfs.fuse, so these run where libfuse3 is
missing; tests/test_fs_adapter.py drives the same through the adapter's boundary."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from kyfs.core.errors import (
    AlreadyExists,
    BadHandle,
    CrossWorkspace,
    KeyNotFound,
    KyfsError,
    NameTooLong,
    NoMoreData,
    ReadOnly,
)
from kyfs.engine.sqlite.engine import SqliteEngine
from kyfs.vfs.mount import HANDLE, PATH, ROOT, Mount


class Kernel:
    """What the mount asks of the kernel's caches, written down."""

    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def invalidate(self, paths: Iterable[str], wait: float = 0, hold: bool = False) -> None:
        self.forgotten += list(paths)

    def invalidate_soon(self, path: str, delay: float = 0, entry: bool = False) -> None:
        self.forgotten.append(path)

    def held(self, path: str) -> bool:
        return False

    def released(self, path: str) -> None:
        pass


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    made = Mount(SqliteEngine(cache=True), Kernel(), lambda: (os.getuid(), os.getgid(), 1),
                 lambda: 0o022, lambda pid: frozenset(), tmp_path / "spill")  # fmt: skip
    made.call(ROOT, "mkdir", made.mkdir, ("/ws", 0o755), {})
    yield made
    made.close()


def test_files_through_the_mount_alone(mount: Mount) -> None:
    def call(kind: str, name: str, *args: object) -> object:
        return mount.call(kind, name, getattr(mount, name), args, {})

    fh = call(PATH, "create", "/ws/a/b", 0o640, os.O_WRONLY)
    assert isinstance(fh, int)
    assert call(HANDLE, "write", "/ws/a/b", b"hello", 0, fh) == 5
    attrs = call(PATH, "getattr", "/ws/a/b")
    assert isinstance(attrs, dict)
    assert attrs["st_size"] == 5 and stat.S_IMODE(attrs["st_mode"]) == 0o640  # buffered
    assert call(HANDLE, "flush", "/ws/a/b", fh) == 0
    assert call(HANDLE, "release", "/ws/a/b", fh) == 0
    with mount.workspaces.using("ws") as workspace:
        assert workspace.get("a/b") == b"hello"  # committed at close
    fh = call(PATH, "open", "/ws/a/b", os.O_RDONLY)
    assert call(HANDLE, "read", "/ws/a/b", 100, 0, fh) == b"hello"
    assert call(HANDLE, "release", "/ws/a/b", fh) == 0
    names = [entry[0] for entry in call(PATH, "readdir", "/ws/a", 0)]  # type: ignore[attr-defined]
    assert names == [".", "..", "b"]


@pytest.mark.parametrize(
    ("kind", "name", "args", "error", "number"),
    [
        (PATH, "getattr", ("/ws/nothing",), KeyNotFound, errno.ENOENT),
        (HANDLE, "read", ("/ws/x", 10, 0, 999), BadHandle, errno.EBADF),
        (ROOT, "mkdir", ("/ws", 0o755), AlreadyExists, errno.EEXIST),
        (ROOT, "mkdir", ("/.search/x", 0o755), ReadOnly, errno.EROFS),
        (ROOT, "rename", ("/ws/a", "/other/a"), CrossWorkspace, errno.EXDEV),
    ],
)
def test_failures_are_kyfs_errors_with_their_errno(
    mount: Mount, kind: str, name: str, args: tuple[object, ...], error: type, number: int
) -> None:
    with pytest.raises(KyfsError) as raised:
        mount.call(kind, name, getattr(mount, name), args, {})
    assert isinstance(raised.value, error) and raised.value.errno == number


def test_a_seek_past_the_data_is_enxio(mount: Mount) -> None:
    fh = mount.call(PATH, "create", mount.create, ("/ws/k", 0o644, os.O_RDWR), {})
    with pytest.raises(NoMoreData) as raised:
        mount.call(HANDLE, "lseek", mount.lseek, ("/ws/k", 10, os.SEEK_DATA, fh), {})
    assert raised.value.errno == errno.ENXIO
    mount.call(HANDLE, "release", mount.release, ("/ws/k", fh), {})


def test_the_mount_imports_no_fuse() -> None:
    import ast

    source = (Path(__file__).parents[2] / "kyfs" / "vfs" / "mount.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    assert imported and not {m for m in imported if m.startswith(("kyfs.fuse", "mfusepy"))}


def test_the_getattr_after_a_create_or_setattr_takes_no_lock_and_opens_nothing(
    mount: Mount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libfuse's high-level API asks getattr right after a create and each setattr (four
    times per file in a ``tar x``): the operation's own attributes answer it before any
    lock or workspace open; any other path, or another call first, goes the whole way."""
    opened: list[str] = []
    open_workspace = mount.workspaces.open
    monkeypatch.setattr(
        mount.workspaces, "open", lambda name: opened.append(name) or open_workspace(name)
    )
    fh = mount.call(PATH, "create", mount.create, ("/ws/f", 0o600, os.O_WRONLY), {})
    opened.clear()
    attrs = mount.call(PATH, "getattr", mount.getattr, ("/ws/f",), {})
    assert opened == [] and stat.S_IMODE(attrs["st_mode"]) == 0o600
    mount.call(PATH, "chmod", mount.chmod, ("/ws/f", 0o640), {})
    opened.clear()
    with pytest.raises(KeyNotFound):  # another path: looked up, and the kept reply is gone
        mount.call(PATH, "getattr", mount.getattr, ("/ws/g",), {})
    attrs = mount.call(PATH, "getattr", mount.getattr, ("/ws/f",), {})
    assert opened == ["ws", "ws"] and stat.S_IMODE(attrs["st_mode"]) == 0o640
    mount.call(HANDLE, "release", mount.release, ("/ws/f", fh), {})


def test_a_bad_name_is_refused_every_time(mount: Mount) -> None:
    """Checked key names are kept (kyfs.vfs.mount._checked_key); refusals never are."""
    long_name = "/ws/" + "x" * 300
    for _ in range(2):
        with pytest.raises(NameTooLong):
            mount.call(PATH, "getattr", mount.getattr, (long_name,), {})
        with pytest.raises(NameTooLong):
            mount.call(PATH, "create", mount.create, (long_name, 0o644, os.O_WRONLY), {})
