"""Snapshots through a real mount (``WORKSPACE/.snapshots/NAME/``, kyfs.vfs.snapshots_tree),
on SQLite and PostgreSQL: the tree a snapshot holds reads as a copy made at that moment
did (diff -r, cp -a, tar, grep -r, readlink, stat), later changes leave it as it was,
every change inside fails EROFS, inode numbers are stable and apart from the live keys',
and a snapshot deleted behind the mount disappears from it."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kyfs.app import open_engine
from tests.conftest import Mount, stop_mount

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("both_engines")]

BIG = 3 * 1024 * 1024 + 17  # bytes: a value of many blocks, read piece by piece
DIFF = ("diff", "-r", "--no-dereference", "--exclude=fifo")  # (diff calls two FIFOs different)


def snapshot(workspace: str, name: str, delete: bool = False) -> None:
    """Make (or ``delete``) snapshot ``name`` of ``workspace`` through the engine, in this
    process: another connection than the daemon's, as the CLI would."""
    engine = open_engine()
    try:
        with engine.using(workspace) as ws:
            if delete:
                ws.delete_snapshot(name)
            else:
                ws.create_snapshot(name)
    finally:
        engine.close()


def fill(root: Path) -> None:
    """A small tree of every kind, with owners, modes and times of its own."""
    (root / "conf" / "deep").mkdir(parents=True)
    (root / "conf" / "app.toml").write_text("port = 8080\n")
    (root / "conf" / "deep" / "note").write_text("needle in the deep\n")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    (root / "private").write_text("mine\n")
    os.chmod(root / "private", 0o600)
    os.chown(root / "private", 1001, 1002)
    os.chmod(root / "conf" / "deep", 0o750)
    (root / "link").symlink_to("conf/app.toml")
    (root / "dangling").symlink_to("../nowhere")
    os.mkfifo(root / "fifo")
    os.utime(root / "conf" / "app.toml", ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))


def shape(root: Path) -> dict[str, tuple[int, int, int, int, int]]:
    """Relative path -> (st_mode, uid, gid, size, mtime_ns) of every name under ``root``
    (a directory's size is left out: kyfs shows 0, a local disk 4096)."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
        found[str(path.relative_to(root))] = (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            size,
            st.st_mtime_ns,
        )
    return found


def run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


def test_a_snapshot_reads_as_a_copy_made_then(mounted: Mount, tmp_path: Path) -> None:
    ws = mounted.path / "default"
    fill(ws)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(ws), str(copy)], check=True)
    snapshot("default", "s1")
    view = ws / ".snapshots" / "s1"
    # hidden from the workspace's listing, reachable by name
    assert ".snapshots" not in os.listdir(ws)
    assert ".snapshots" not in run("ls", "-a", str(ws)).stdout.split()
    assert os.listdir(ws / ".snapshots") == ["s1"]
    assert stat.S_ISDIR(os.stat(view).st_mode)
    # the tree then, byte for byte and attribute for attribute
    done = run(*DIFF, str(copy), str(view))
    assert done.returncode == 0, done.stdout + done.stderr
    assert shape(view) == shape(copy)
    assert os.readlink(view / "link") == "conf/app.toml"
    assert os.readlink(view / "dangling") == "../nowhere"
    assert (view / "link").read_text() == "port = 8080\n"  # resolved inside the snapshot
    assert stat.S_ISFIFO(os.lstat(view / "fifo").st_mode)
    assert os.stat(view).st_mode & 0o7777 == os.stat(ws).st_mode & 0o7777
    grep = run("grep", "-r", "needle", str(view))
    assert grep.stdout == f"{view}/conf/deep/note:needle in the deep\n", grep.stderr
    # out again with cp -a and tar
    out = tmp_path / "out"
    subprocess.run(["cp", "-a", str(view), str(out)], check=True)
    assert shape(out) == shape(copy)
    assert run(*DIFF, str(copy), str(out)).returncode == 0
    tarred = subprocess.run(
        ["tar", "c", "-C", str(view), "."], capture_output=True, check=True
    ).stdout
    untar = tmp_path / "untar"
    untar.mkdir()
    subprocess.run(["tar", "x", "-C", str(untar)], input=tarred, check=True)
    assert run(*DIFF, str(copy), str(untar)).returncode == 0
    # the mount's root and the workspace walk as before: no .snapshots anywhere
    assert ".snapshots" not in run("find", str(mounted.path)).stdout
    assert "needle" in run("grep", "-r", "needle", str(mounted.path)).stdout
    assert run("grep", "-rl", "needle", str(mounted.path)).stdout.count("\n") == 1


def test_later_changes_leave_a_snapshot_as_it_was(mounted: Mount, tmp_path: Path) -> None:
    ws = mounted.path / "default"
    fill(ws)
    first = tmp_path / "first"
    subprocess.run(["cp", "-a", str(ws), str(first)], check=True)
    snapshot("default", "s1")
    (ws / "conf" / "app.toml").write_text("port = 9090\n")
    (ws / "private").unlink()
    shutil.rmtree(ws / "conf" / "deep")
    (ws / "new").write_text("after\n")
    with open(ws / "big.bin", "r+b") as big:
        big.seek(BIG // 2)
        big.write(b"changed")
    second = tmp_path / "second"
    subprocess.run(["cp", "-a", str(ws), str(second)], check=True)
    snapshot("default", "s2")
    snaps = ws / ".snapshots"
    assert sorted(os.listdir(snaps)) == ["s1", "s2"]
    for name, copy in (("s1", first), ("s2", second)):
        done = run(*DIFF, str(copy), str(snaps / name))
        assert done.returncode == 0, (name, done.stdout + done.stderr)
    assert (snaps / "s1" / "conf" / "app.toml").read_text() == "port = 8080\n"
    assert (snaps / "s2" / "conf" / "app.toml").read_text() == "port = 9090\n"
    assert not (snaps / "s2" / "private").exists()
    between = run(*DIFF, str(snaps / "s1"), str(snaps / "s2"))
    assert between.returncode == 1 and "big.bin differ" in between.stdout


def test_every_change_inside_a_snapshot_fails_read_only(mounted: Mount) -> None:
    ws = mounted.path / "default"
    fill(ws)
    snapshot("default", "s1")
    view = ws / ".snapshots" / "s1"
    assert (view / "private").read_text() == "mine\n"  # root reads; nothing writes
    refused = {
        "touch a new file": ["touch", str(view / "new")],
        "touch a file": ["touch", str(view / "private")],
        "write into a file": ["sh", "-c", f"echo x > {view}/conf/app.toml"],
        "append to a file": ["sh", "-c", f"echo x >> {view}/private"],
        "rm": ["rm", "-f", str(view / "private")],
        "rm -r": ["rm", "-rf", str(view / "conf")],
        "mkdir": ["mkdir", str(view / "dir")],
        "mkdir in .snapshots": ["mkdir", str(ws / ".snapshots" / "s9")],
        "rmdir a snapshot": ["rmdir", str(view)],
        "mv inside": ["mv", str(view / "private"), str(view / "moved")],
        "mv out": ["mv", str(view / "private"), str(ws / "moved")],
        "mv in": ["mv", str(ws / "private"), str(view / "private2")],
        "chmod": ["chmod", "644", str(view / "private")],
        "chown": ["chown", "0:0", str(view / "private")],
        "setfattr": ["setfattr", "-n", "user.x", "-v", "1", str(view / "private")],
        "ln -s": ["ln", "-s", "x", str(view / "l2")],
        "ln": ["ln", str(view / "private"), str(view / "hard")],
        "truncate": ["truncate", "-s", "0", str(view / "private")],
    }
    for what, command in refused.items():
        done = run(*command)
        assert done.returncode != 0, what
        assert "Read-only file system" in done.stderr, (what, done.stderr)
    # deeper down the name is reserved, as .versions is: no key is ever named so
    (ws / "sub").mkdir()
    assert "Invalid argument" in run("mkdir", str(ws / "sub" / ".snapshots")).stderr
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        with pytest.raises(OSError) as caught:
            os.open(view / "conf" / "app.toml", flags)
        assert caught.value.errno == errno.EROFS
    assert (view / "private").read_text() == "mine\n"
    assert (ws / "private").read_text() == "mine\n"
    assert sorted(os.listdir(view)) == ["big.bin", "conf", "dangling", "fifo", "link", "private"]


def test_inode_numbers_are_stable_and_apart_from_the_live_keys(
    mount_factory: Callable[..., Mount],
) -> None:
    mount = mount_factory()
    ws = mount.path / "default"
    fill(ws)
    snapshot("default", "s1")
    snapshot("default", "s2")

    def numbers(root: Path) -> dict[str, int]:
        return {str(p.relative_to(root)): p.lstat().st_ino for p in root.rglob("*")}

    live = numbers(ws)
    s1, s2 = numbers(ws / ".snapshots" / "s1"), numbers(ws / ".snapshots" / "s2")
    assert s1.keys() == s2.keys() == live.keys()
    every = list(live.values()) + list(s1.values()) + list(s2.values())
    assert len(set(every)) == len(every)  # no two names share one
    assert all(0 < ino < 2**53 for ino in every)
    # readdir's d_ino equals stat's st_ino (find -inum, ls -i), "." included
    listed = run("ls", "-ia", str(ws / ".snapshots" / "s1" / "conf")).stdout.split()
    by_name = dict(zip(listed[1::2], (int(n) for n in listed[0::2]), strict=True))
    assert by_name["."] == os.stat(ws / ".snapshots" / "s1" / "conf").st_ino
    assert by_name["app.toml"] == s1["conf/app.toml"]
    stop_mount(mount)
    mount = mount_factory()
    ws = mount.path / "default"
    assert numbers(ws / ".snapshots" / "s1") == s1
    assert numbers(ws) == live


def test_a_snapshot_deleted_behind_the_mount_disappears(mounted: Mount) -> None:
    ws = mounted.path / "default"
    fill(ws)
    snapshot("default", "s1")
    snapshot("default", "s2")
    view = ws / ".snapshots" / "s1"
    # let the kernel cache what it can: names, attributes, a listing, pages
    assert shape(view)
    assert (view / "conf" / "deep" / "note").read_text() == "needle in the deep\n"
    held = open(view / "big.bin", "rb")  # noqa: SIM115 (read after the delete)
    try:
        assert len(held.read(4096)) == 4096
        snapshot("default", "s1", delete=True)
        deadline = time.monotonic() + 5
        paths = [view, view / "conf", view / "conf" / "deep" / "note", view / "link"]
        while any(os.path.lexists(p) for p in paths) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in paths if os.path.lexists(p)] == []
        with pytest.raises(FileNotFoundError):
            os.stat(view)
        assert os.listdir(ws / ".snapshots") == ["s2"]
        held.seek(BIG - 10)
        try:  # a file open in it reads no more, but from the pages the kernel kept
            tail = held.read(4096)
        except OSError as exc:
            assert exc.errno == errno.ESTALE
        else:
            assert len(tail) == 10
    finally:
        held.close()
    assert (ws / ".snapshots" / "s2" / "private").read_text() == "mine\n"
    # the same name made again shows the new snapshot
    (ws / "private").write_text("changed\n")
    snapshot("default", "s1")
    assert (view / "private").read_text() == "changed\n"


def test_hard_links_in_a_snapshot_are_one_file(mounted: Mount, tmp_path: Path) -> None:
    ws = mounted.path / "default"
    (ws / "one").write_text("shared body\n")
    os.link(ws / "one", ws / "two")
    (ws / "alone").write_text("alone\n")
    snapshot("default", "links")
    view = ws / ".snapshots" / "links"
    one, two, alone = (os.stat(view / name) for name in ("one", "two", "alone"))
    assert one.st_ino == two.st_ino != alone.st_ino
    assert (one.st_nlink, two.st_nlink, alone.st_nlink) == (2, 2, 1)
    out = tmp_path / "out"
    subprocess.run(["cp", "-a", str(view), str(out)], check=True)  # cp -a keeps the link
    assert os.stat(out / "one").st_ino == os.stat(out / "two").st_ino
    assert (out / "two").read_text() == "shared body\n"
