"""A real filesystem through a real mount: owners, symlinks, hard links, times, link counts,
deep keys, consistent reads and crash restarts, checked with programs nobody here wrote
(tar, cp, rsync, find, python's import system) against the same tree on the native disk.

Runs as root where the host allows (setpriv switches to other users for the owner tests).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kyfs.fuse.daemon import read_record
from tests.conftest import Mount, require_mount

pytestmark = pytest.mark.mount
OLD = 1_000_000_000  # 2001-09-09, seconds: a time no test run creates by itself
ALICE, BOB = 1000, 1001  # uids (and gids) with no account needed
AS_ALICE = ["setpriv", f"--reuid={ALICE}", f"--regid={ALICE}", "--clear-groups"]
AS_BOB = ["setpriv", f"--reuid={BOB}", f"--regid={BOB}", "--clear-groups"]
FIND_FORMAT = "%P %y %U %G %m %l %n %T@\\n"  # name type uid gid mode target links mtime


def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: owners other than the caller")


def make_tree(top: Path) -> None:
    """A small tree with two owners, symlinks of every kind, a hard link, a sticky and a
    setgid directory, and old integer-second mtimes (tar's default format keeps seconds)."""
    top.mkdir()
    (top / "a.txt").write_text("alpha\n")
    (top / "b.bin").write_bytes(bytes(range(256)) * 50)
    (top / "sticky").mkdir()
    (top / "sticky" / "f").write_text("in sticky\n")
    (top / "setgid").mkdir()
    (top / "setgid" / "g").write_text("in setgid\n")
    (top / "deep" / "er" / "est").mkdir(parents=True)
    (top / "deep" / "er" / "est" / "leaf").write_text("leaf\n")
    os.symlink("a.txt", top / "rel")
    os.symlink("/etc/hostname", top / "abs")
    os.symlink("nowhere/x", top / "dangling")
    os.symlink("deep/er", top / "dirlink")
    os.link(top / "a.txt", top / "hard")
    os.chown(top / "a.txt", ALICE, ALICE)
    os.chmod(top / "a.txt", 0o640)
    os.chown(top / "sticky" / "f", BOB, BOB)
    os.chown(top / "setgid", 0, ALICE)
    os.chmod(top / "sticky", 0o1777)
    os.chmod(top / "setgid", 0o2775)
    os.chmod(top / "b.bin", 0o600)
    os.lchown(top / "rel", BOB, BOB)
    for n, path in enumerate(sorted(top.rglob("*"), reverse=True)):  # children first
        os.utime(path, (OLD + n, OLD + n), follow_symlinks=False)
    os.utime(top, (OLD, OLD))


def listing(top: Path) -> list[str]:
    """What find sees of a tree: one line per entry, sorted."""
    done = subprocess.run(
        ["find", str(top), "-printf", FIND_FORMAT], capture_output=True, text=True, check=True
    )
    return sorted(done.stdout.splitlines())


@pytest.fixture
def source(tmp_path: Path) -> Path:
    _root_only()
    top = tmp_path / "src" / "tree"
    top.parent.mkdir()
    make_tree(top)
    return top


def test_tar_x_keeps_owners_links_modes_and_times(
    source: Path, mounted: Mount, tmp_path: Path
) -> None:
    archive = tmp_path / "tree.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(source.parent), "tree"], check=True)
    ws = mounted.path / "default"
    done = subprocess.run(
        ["tar", "xpf", str(archive), "--numeric-owner", "-C", str(ws)], capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert listing(ws / "tree") == listing(source)
    assert (ws / "tree" / "hard").stat().st_ino == (ws / "tree" / "a.txt").stat().st_ino


def test_cp_a_and_rsync_ah_round_trip_exactly(source: Path, mounted: Mount) -> None:
    ws = mounted.path / "default"
    done = subprocess.run(["cp", "-a", str(source), str(ws / "by-cp")], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert listing(ws / "by-cp") == listing(source)
    done = subprocess.run(
        ["rsync", "-aH", "--numeric-ids", f"{source}/", str(ws / "by-rsync")], capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert listing(ws / "by-rsync") == listing(source)
    back = source.parent / "back"  # and out again, unchanged
    subprocess.run(["cp", "-a", str(ws / "by-cp"), str(back)], check=True)
    assert listing(back) == listing(source)
    assert (
        subprocess.run(["diff", "-r", "--no-dereference", str(source), str(back)]).returncode == 0
    )


def test_symlinks_through_the_mount_and_the_cli(mounted: Mount) -> None:
    ws = mounted.path / "default"
    (ws / "conf").mkdir()
    (ws / "conf" / "app.toml").write_text("x = 1\n")
    os.symlink("conf/app.toml", ws / "current")
    os.symlink("/nonexistent/target", ws / "dangling")
    assert os.readlink(ws / "current") == "conf/app.toml"
    assert (ws / "current").read_text() == "x = 1\n"  # the kernel follows it
    lst = os.lstat(ws / "dangling")
    assert stat.S_ISLNK(lst.st_mode) and lst.st_size == len("/nonexistent/target")
    assert not (ws / "dangling").exists()
    done = mounted.kyfs("get", "current")
    assert done.returncode == 0 and done.stdout == b"conf/app.toml"
    facts = json.loads(mounted.kyfs("get", "current", "--json").stdout)
    assert facts["type"] == "symlink" and facts["value"] == "conf/app.toml"
    assert sorted(json.loads(mounted.kyfs("keys", "--json").stdout)) == [
        "conf/app.toml", "current", "dangling",
    ]  # fmt: skip
    os.rename(ws / "current", ws / "conf" / "link")  # a relative link moves as text
    assert os.readlink(ws / "conf" / "link") == "conf/app.toml"
    os.unlink(ws / "conf" / "link")
    assert (ws / "conf" / "app.toml").read_text() == "x = 1\n"


def test_hard_links_share_one_node(mounted: Mount) -> None:
    ws = mounted.path / "default"
    (ws / "one").write_text("first\n")
    os.link(ws / "one", ws / "two")
    one, two = os.stat(ws / "one"), os.stat(ws / "two")
    assert one.st_ino == two.st_ino and one.st_nlink == two.st_nlink == 2
    with open(ws / "two", "a") as handle:
        handle.write("second\n")
    assert (ws / "one").read_text() == "first\nsecond\n"
    assert mounted.kyfs("get", "one").stdout == b"first\nsecond\n"
    os.unlink(ws / "one")
    assert (ws / "two").read_text() == "first\nsecond\n"
    assert os.stat(ws / "two").st_nlink == 1
    # search finds the node under each of its names
    os.link(ws / "two", ws / "three")
    found = mounted.kyfs("search", "second", "--keys-only").stdout.decode().split()
    assert found == ["default/three", "default/two"]
    # What one name changes shows at once under the others, although the kernel caches
    # each name's attributes apart (30 s): mode, and a rename onto a linked name.
    before = os.stat(ws / "three")
    os.chmod(ws / "two", 0o600)
    assert os.stat(ws / "three").st_mode & 0o777 == 0o600
    (ws / "other").write_text("x")
    os.rename(ws / "other", ws / "two")  # "three" loses its second name
    after = os.stat(ws / "three")
    assert after.st_nlink == 1 and after.st_ctime_ns > before.st_ctime_ns


def test_inode_numbers_stay_across_rename_and_remount(
    mount_factory: Callable[..., Mount],
) -> None:
    mount = mount_factory()
    ws = mount.path / "default"
    (ws / "d").mkdir()
    (ws / "d" / "f").write_text("v")
    before = os.stat(ws / "d" / "f").st_ino
    os.rename(ws / "d", ws / "e")
    assert os.stat(ws / "e" / "f").st_ino == before
    subprocess.run(["fusermount3", "-u", str(mount.path)], check=True)
    mount.process.wait(timeout=15)
    again = mount_factory(name="again")
    assert os.stat(again.path / "default" / "e" / "f").st_ino == before


def test_directory_link_counts_and_times(mounted: Mount) -> None:
    ws = mounted.path / "default"
    (ws / "top").mkdir()
    assert os.stat(ws / "top").st_nlink == 2
    (ws / "top" / "sub1").mkdir()
    (ws / "top" / "sub2").mkdir()
    (ws / "top" / "file").write_text("x")
    assert os.stat(ws / "top").st_nlink == 4  # 2 + two subdirectories; files do not count
    os.utime(ws / "top", ns=(OLD * 10**9, OLD * 10**9))
    checks: list[tuple[str, Callable[[], object]]] = [
        ("create", lambda: (ws / "top" / "new").write_text("y")),
        ("unlink", lambda: os.unlink(ws / "top" / "new")),
        ("mkdir", lambda: (ws / "top" / "sub3").mkdir()),
        ("rmdir", lambda: os.rmdir(ws / "top" / "sub3")),
        ("rename in", lambda: os.rename(ws / "top" / "file", ws / "top" / "file2")),
        ("symlink", lambda: os.symlink("file2", ws / "top" / "ln")),
        ("link", lambda: os.link(ws / "top" / "file2", ws / "top" / "hl")),
    ]
    for what, change in checks:
        os.utime(ws / "top", ns=(OLD * 10**9, OLD * 10**9))
        change()
        after = os.stat(ws / "top")
        assert after.st_mtime_ns > OLD * 10**9, what
        assert after.st_ctime_ns > OLD * 10**9, what
    os.rename(ws / "top" / "sub2", ws / "sub2")
    assert os.stat(ws / "top").st_nlink == 3  # sub2 moved out
    assert os.stat(ws).st_nlink >= 3  # ... and into the workspace's top
    node, moved = ws / "top" / "file2", ws / "top" / "file3"
    steps: list[tuple[str, Callable[..., object], tuple[object, ...], Path]] = [
        ("chmod", os.chmod, (node, 0o600), node),
        ("chown", os.chown, (node, os.getuid(), os.getgid()), node),
        ("link", os.link, (node, ws / "top" / "hl2"), node),
        ("rename", os.rename, (node, moved), moved),
    ]
    for what, call, args, after in steps:
        before = os.stat(node).st_ctime_ns
        time.sleep(0.01)
        call(*args)
        assert os.stat(after).st_ctime_ns > before, what


def test_utimensat_on_an_open_file_wins_over_its_buffered_writes(
    mounted: Mount, tmp_path: Path
) -> None:
    ws = mounted.path / "default"
    with open(ws / "f", "wb") as handle:
        handle.write(b"data")
        handle.flush()  # write(2): the daemon buffers it until close
        os.utime(handle.fileno(), ns=(OLD * 10**9, OLD * 10**9))  # futimens before close
    assert os.stat(ws / "f").st_mtime_ns == OLD * 10**9
    native = tmp_path / "native"
    native.write_bytes(b"x" * 10000)
    os.utime(native, (OLD, OLD))
    for command in (["cp", "-p"], ["install", "-p"]):
        target = ws / f"by-{command[0]}"
        subprocess.run([*command, str(native), str(target)], check=True)
        assert os.stat(target).st_mtime_ns == OLD * 10**9, command


def test_a_running_python_imports_a_module_written_after_its_first_import(
    mounted: Mount,
) -> None:
    ws = mounted.path / "default"
    program = (
        "import pathlib, sys\n"
        f"root = pathlib.Path({str(ws)!r})\n"
        "sys.path.insert(0, str(root))\n"
        "(root / 'pkg').mkdir()\n"
        "(root / 'pkg' / '__init__.py').write_text('')\n"
        "(root / 'pkg' / 'm1.py').write_text('X = 1')\n"
        "import pkg.m1\n"
        "(root / 'pkg' / 'm2.py').write_text('Y = 2')\n"
        "import pkg.m2\n"
        "print(pkg.m1.X + pkg.m2.Y)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "3\n"


def test_find_newer_sees_changes(mounted: Mount, tmp_path: Path) -> None:
    ws = mounted.path / "default"
    (ws / "d").mkdir()
    time.sleep(0.02)  # the stamp's file system takes the kernel's coarse clock (jiffies)
    stamp = tmp_path / "stamp"
    stamp.write_text("")
    time.sleep(0.02)
    (ws / "d" / "new").write_text("n")
    found = subprocess.run(
        ["find", str(ws), "-newer", str(stamp)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(found) == sorted([str(ws / "d"), str(ws / "d" / "new")])  # not ws: older


def test_names_up_to_255_bytes_and_keys_deeper_than_path_max(mounted: Mount) -> None:
    ws = mounted.path / "default"
    (ws / ("n" * 255)).write_text("ok")
    with pytest.raises(OSError) as info:
        (ws / ("n" * 256)).write_text("no")
    assert info.value.errno == 36  # ENAMETOOLONG
    start = os.getcwd()
    fd = os.open(ws, os.O_RDONLY)
    try:
        os.chdir(ws)
        for _ in range(25):  # 25 x 201 bytes = 5,025 bytes: deeper than PATH_MAX (4096)
            os.mkdir("d" * 200)
            os.chdir("d" * 200)
        with open("leaf", "w") as handle:
            handle.write("deep")
    finally:
        os.chdir(start)
        os.close(fd)
    key = "/".join(["d" * 200] * 25) + "/leaf"
    assert mounted.kyfs("get", key).stdout == b"deep"


def test_fstat_of_an_open_unlinked_file(mounted: Mount) -> None:
    ws = mounted.path / "default"
    with open(ws / "tmp", "w+b") as handle:
        handle.write(b"12345")
        handle.flush()
        os.unlink(ws / "tmp")
        facts = os.fstat(handle.fileno())
        assert facts.st_size == 5 and facts.st_nlink == 0
        handle.seek(0)
        assert handle.read() == b"12345"


def test_df_i_counts_nodes(mounted: Mount) -> None:
    ws = mounted.path / "default"
    before = os.statvfs(mounted.path)
    (ws / "a").mkdir()
    (ws / "a" / "f").write_text("x")
    os.symlink("f", ws / "a" / "l")
    after = os.statvfs(mounted.path)
    used_before = before.f_files - before.f_ffree
    assert after.f_files - after.f_ffree == used_before + 3
    assert used_before > 0
    done = subprocess.run(["df", "-i", str(mounted.path)], capture_output=True, text=True)
    iused = int(done.stdout.splitlines()[1].split()[2])
    assert iused == used_before + 3


# --- owners ----------------------------------------------------------------------------
@pytest.fixture
def public_mount(mount_factory: Callable[..., Mount]) -> Iterator[Mount]:
    """A mount with allow_other at a path other users can traverse (pytest's tmp_path is
    private to root)."""
    _root_only()
    top = Path(tempfile.mkdtemp(prefix="kyfs-owners-"))
    top.chmod(0o755)
    try:
        mount = mount_factory(options="allow_other", at=top / "mnt")
        (mount.path / "default").chmod(0o777)
        yield mount
        subprocess.run(["fusermount3", "-u", str(mount.path)], capture_output=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _as(who: list[str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*who, "sh", "-c", command], capture_output=True, text=True)


def test_new_entries_belong_to_the_caller(public_mount: Mount) -> None:
    ws = public_mount.path / "default"
    assert _as(AS_ALICE, f"echo hi > {ws}/mine && mkdir {ws}/dir").returncode == 0
    for name in ("mine", "dir"):
        facts = os.stat(ws / name)
        assert (facts.st_uid, facts.st_gid) == (ALICE, ALICE), name
    # the owner chmods; another user may not
    assert _as(AS_ALICE, f"chmod 600 {ws}/mine").returncode == 0
    assert _as(AS_BOB, f"chmod 666 {ws}/mine").returncode != 0
    assert _as(AS_BOB, f"cat {ws}/mine").returncode != 0  # EACCES: 0600 of alice
    # root gives it away; a non-root owner cannot
    os.chown(ws / "mine", BOB, BOB)
    assert os.stat(ws / "mine").st_uid == BOB
    assert _as(AS_BOB, f"chown {ALICE} {ws}/mine").returncode != 0  # EPERM
    # a setuid file loses the bit when its non-root owner changes its group
    os.chmod(ws / "mine", 0o4755)
    assert _as(AS_BOB, f"chgrp {BOB} {ws}/mine").returncode == 0
    assert not os.stat(ws / "mine").st_mode & stat.S_ISUID


def test_sticky_and_setgid_directories(public_mount: Mount) -> None:
    ws = public_mount.path / "default"
    (ws / "tmp").mkdir()
    os.chmod(ws / "tmp", 0o1777)
    assert _as(AS_ALICE, f"echo a > {ws}/tmp/alice").returncode == 0
    assert _as(AS_BOB, f"rm -f {ws}/tmp/alice").returncode != 0  # EPERM: sticky
    assert (ws / "tmp" / "alice").exists()
    assert _as(AS_ALICE, f"rm {ws}/tmp/alice").returncode == 0
    (ws / "shared").mkdir()
    os.chown(ws / "shared", 0, BOB)
    os.chmod(ws / "shared", 0o2777)
    assert _as(AS_ALICE, f"touch {ws}/shared/f && mkdir {ws}/shared/sub").returncode == 0
    assert os.stat(ws / "shared" / "f").st_gid == BOB  # the directory's group
    sub = os.stat(ws / "shared" / "sub")
    assert sub.st_gid == BOB and sub.st_mode & stat.S_ISGID  # inherited


# --- consistency and errors -------------------------------------------------------------
def test_kyfs_get_never_returns_a_torn_value(mounted: Mount) -> None:
    ws = mounted.path / "default"
    size = 700_000  # three blocks
    versions = [bytes([n]) * size for n in range(1, 40)]
    (ws / "hot").write_bytes(versions[0])
    stop = threading.Event()

    def rewrite() -> None:
        n = 0
        while not stop.is_set():
            n = (n + 1) % len(versions)
            with open(ws / "hot", "r+b") as handle:
                handle.write(versions[n])

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        seen = []
        for _ in range(30):
            value = mounted.kyfs("get", "hot").stdout
            seen.append(value)
    finally:
        stop.set()
        writer.join()
    assert all(value in versions for value in seen)


# Rounds of test_kill_9_then_mount_at_once_recovers_every_time: KYFS_CRASH_ROUNDS, as
# tests/test_crash.py (10 by default, in CI; 20 in ``make faults``).
RESTARTS = int(os.environ.get("KYFS_CRASH_ROUNDS", "10"))


def test_kill_9_then_mount_at_once_recovers_every_time(tmp_path: Path) -> None:
    require_mount()
    mountpoint = tmp_path / "mnt"
    env = {**os.environ}

    def kyfs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kyfs", *args], capture_output=True, text=True, env=env
        )

    try:
        for round_number in range(RESTARTS):
            done = kyfs("mount", str(mountpoint))
            assert done.returncode == 0, f"round {round_number}: {done.stderr}"
            (mountpoint / "default" / f"r{round_number}").write_text("x")
            os.stat(mountpoint / "default")  # the kernel now caches the root's attributes
            record = read_record(mountpoint)
            assert record is not None
            os.kill(record["pid"], signal.SIGKILL)
        assert kyfs("mount", str(mountpoint)).returncode == 0
        assert sorted(os.listdir(mountpoint / "default")) == sorted(
            f"r{n}" for n in range(RESTARTS)
        )
        assert kyfs("unmount", str(mountpoint)).returncode == 0
    finally:
        if os.path.ismount(mountpoint) or not os.path.exists(mountpoint):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
