"""Real mounts driven by real programs: cat, echo, printf, cp -r, diff -r, grep -r, mv, rm -r, dd.

Every test here mounts kyfs with the real daemon (see conftest.mounted) or the
real ``kyfs mount`` command, and unmounts in teardown. Every test runs on both engines:
SQLite files, and a database of its own on the session's PostgreSQL server
(``KYFS_ENGINE``, which the daemon and the CLI commands inherit).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Mount, alive, is_stale, require_mount

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("both_engines")]


def sh(command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a shell command; fail the test with its stderr when it fails."""
    done = subprocess.run(["sh", "-c", command], cwd=cwd, capture_output=True, timeout=300)
    assert done.returncode == 0, f"{command!r} failed: {done.stderr.decode(errors='replace')}"
    return done


def eventually(check, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``check`` until it returns truthy: a change behind the mount shows once the
    daemon's watcher has invalidated it (every 0.25 s)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_echo_cat_printf_text_and_binary(mounted: Mount) -> None:
    ws = mounted.path / "default"
    sh(f"echo Alice > {ws}/user.name")
    assert sh(f"cat {ws}/user.name").stdout == b"Alice\n"
    sh(f"printf 'x\\000y\\377\\001' > {ws}/bin.value")
    assert sh(f"cat {ws}/bin.value").stdout == b"x\x00y\xff\x01"
    sh(f"echo more >> {ws}/user.name")
    assert sh(f"cat {ws}/user.name").stdout == b"Alice\nmore\n"
    got = mounted.kyfs("get", "bin.value", "-w", "default")
    assert got.returncode == 0 and got.stdout == b"x\x00y\xff\x01"
    assert sh(f"ls {ws}").stdout.split() == [b"bin.value", b"user.name"]


def _source_tree() -> tuple[Path, list[str]]:
    """Packages of the installed standard library, added until they hold >= 1,000 files."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    chosen, count = [], 0
    for name in ["email", "json", "unittest", "asyncio", "xml", "encodings", "lib2to3", "idlelib"]:
        if (stdlib / name).is_dir():
            chosen.append(name)
            count += sum(1 for p in (stdlib / name).rglob("*") if p.is_file())
        if count >= 1000:
            break
    assert count >= 1000, f"only {count} files found under {stdlib}"
    return stdlib, chosen


def test_cp_r_tree_then_diff_r_and_grep_r(mounted: Mount, tmp_path: Path) -> None:
    stdlib, packages = _source_tree()
    target = mounted.path / "default" / "tree"
    target.mkdir()
    sources = " ".join(str(stdlib / p) for p in packages)
    started = time.monotonic()
    sh(f"cp -r {sources} {target}/")
    elapsed = time.monotonic() - started
    files = sum(1 for p in target.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"\ncp -r: {files} files, {size} bytes in {elapsed:.2f} s")
    assert files >= 1000
    for package in packages:
        sh(f"diff -r {stdlib / package} {target / package}")
    listed = [
        sh(f"grep -rl 'def ' {' '.join(packages)} | sort", cwd=d).stdout for d in (stdlib, target)
    ]
    assert listed[0] == listed[1] and listed[0].count(b"\n") > 50
    # The keys are there for the CLI too.
    keys = mounted.kyfs("keys", "tree/json/", "-w", "default").stdout.decode().split()
    assert "tree/json/__init__.py" in keys


def test_workspaces_at_root_mkdir_mv_rm_r(mounted: Mount) -> None:
    root = mounted.path
    sh(f"mkdir {root}/beta && mkdir -p {root}/beta/a/b && echo hi > {root}/beta/a/b/c")
    assert mounted.kyfs("get", "a/b/c", "-w", "beta").stdout == b"hi\n"
    mounted.kyfs("use", "beta")
    sh(f"mv {root}/beta {root}/gamma")
    assert sorted(os.listdir(root)) == ["default", "gamma", "shared"]
    assert sh(f"cat {root}/gamma/a/b/c").stdout == b"hi\n"
    used = mounted.kyfs("get", "a/b/c")  # the active workspace followed the rename
    assert used.returncode == 0 and used.stdout == b"hi\n"
    sh(f"rm -r {root}/gamma")
    assert sorted(os.listdir(root)) == ["default", "shared"]
    assert mounted.kyfs("workspaces").stdout.decode().split()[0] == "default"
    done = subprocess.run(["sh", "-c", f"echo x > {root}/file"], capture_output=True)
    assert done.returncode != 0 and b"Operation not permitted" in done.stderr


def test_rename_directory_of_keys(mounted: Mount) -> None:
    ws = mounted.path / "default"
    sh(f"mkdir -p {ws}/conf/sub && echo 1 > {ws}/conf/a && echo 2 > {ws}/conf/sub/b")
    sh(f"mv {ws}/conf {ws}/settings")
    assert not (ws / "conf").exists()
    assert sh(f"cat {ws}/settings/a {ws}/settings/sub/b").stdout == b"1\n2\n"
    keys = mounted.kyfs("keys", "-w", "default").stdout.decode().split()
    assert keys == ["settings/a", "settings/sub/b"]
    done = subprocess.run(["mv", f"{ws}/settings/a", f"{mounted.path}/"], capture_output=True)
    assert done.returncode != 0  # EXDEV makes mv copy, and a file at the root is refused
    assert (ws / "settings" / "a").exists()


def test_200_mib_file_with_dd_keeps_its_sha256(mounted: Mount, tmp_path: Path) -> None:
    source = tmp_path / "random.bin"
    sh(f"dd if=/dev/urandom of={source} bs=1M count=200 status=none")
    target = mounted.path / "default" / "big.bin"
    sh(f"dd if={source} of={target} bs=1M status=none")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert sh(f"sha256sum {target}").stdout.split()[0].decode() == digest
    assert target.stat().st_size == 200 * 1024 * 1024
    peak = mounted.peak_rss_kib()
    print(f"\ndaemon peak RSS with a 200 MiB file: {peak / 1024:.1f} MiB")
    assert peak < 120 * 1024, "the daemon's memory grew with the file size"
    with target.open("rb") as handle:  # a read at an offset in the middle
        handle.seek(123_456_789)
        assert handle.read(1000) == source.read_bytes()[123_456_789:123_457_789]


def test_cli_and_mount_see_each_other(mounted: Mount) -> None:
    ws = mounted.path / "default"
    assert mounted.kyfs("set", "-w", "default", "from.cli", "v1").returncode == 0
    eventually(lambda: (ws / "from.cli").exists())
    assert (ws / "from.cli").read_bytes() == b"v1"
    mounted.kyfs("set", "-w", "default", "from.cli", "version two")
    eventually(lambda: (ws / "from.cli").read_bytes() == b"version two")
    (ws / "from.mount").write_bytes(b"written through the mount")
    got = mounted.kyfs("get", "-w", "default", "from.mount")  # right after close returned
    assert got.stdout == b"written through the mount"
    mounted.kyfs("delete", "-w", "default", "from.cli")
    eventually(lambda: not (ws / "from.cli").exists())
    mounted.kyfs("create", "fromcli")
    eventually(lambda: (mounted.path / "fromcli").is_dir())
    mounted.kyfs("rename", "fromcli", "renamed")
    eventually(lambda: sorted(os.listdir(mounted.path)) == ["default", "renamed", "shared"])
    (mounted.path / "renamed" / "k").write_bytes(b"ok")
    assert mounted.kyfs("get", "-w", "renamed", "k").stdout == b"ok"
    mounted.kyfs("drop", "renamed", "--yes")
    eventually(lambda: sorted(os.listdir(mounted.path)) == ["default", "shared"])


def test_changes_behind_the_mount_show_although_the_kernel_caches(
    mount_factory: Callable[..., Mount],
) -> None:
    """The kernel keeps names and attributes for 30 s (ATTR_TIMEOUT); what changes behind
    the mount (the CLI, a second daemon on the same data, TTL expiry) must show well
    before: the daemon's watcher invalidates it. Each look below is first cached by a
    read or stat through the mount."""
    mounted = mount_factory()
    second = mount_factory(name="second")
    ws = mounted.path / "default"
    sub = ws / "dir"
    sub.mkdir()
    for name in ("grows", "dir/goes", "moves", "expires", "linked"):
        (ws / name).write_bytes(b"short")
    os.link(ws / "linked", ws / "other.name")
    for name in ("grows", "dir/goes", "moves", "expires", "linked", "other.name"):
        assert (ws / name).read_bytes() == b"short" and (ws / name).stat().st_size == 5
    soon = 5.0  # seconds: the watcher looks every 0.25 s; without it this took 30 s

    cli = mounted.kyfs("set", "-w", "default", "grows", "a longer value")
    assert cli.returncode == 0, cli.stderr
    eventually(lambda: (ws / "grows").read_bytes() == b"a longer value", soon)
    assert (ws / "grows").stat().st_size == len(b"a longer value")

    assert mounted.kyfs("set", "-w", "default", "linked", "both names").returncode == 0
    eventually(lambda: (ws / "other.name").read_bytes() == b"both names", soon)

    assert mounted.kyfs("delete", "-w", "default", "dir/goes").returncode == 0
    eventually(lambda: not (sub / "goes").exists(), soon)

    os.rename(second.path / "default" / "moves", second.path / "default" / "moved")
    eventually(lambda: not (ws / "moves").exists(), soon)
    assert (ws / "moved").read_bytes() == b"short"

    assert mounted.kyfs("ttl", "-w", "default", "expires", "1s").returncode == 0
    eventually(lambda: not (ws / "expires").exists(), soon + 1)

    assert mounted.kyfs("create", "gone").returncode == 0
    (mounted.path / "gone" / "k").write_bytes(b"v")
    assert (mounted.path / "gone" / "k").stat().st_size == 1
    assert mounted.kyfs("drop", "gone", "--yes").returncode == 0
    eventually(lambda: not (mounted.path / "gone" / "k").exists(), soon)
    eventually(lambda: not (mounted.path / "gone").exists(), soon)


WRITER = r"""
import os, sys
path, tag, rounds = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
for n in range(rounds):
    body = (tag + b"%06d" % n) * 200_000  # 1.6 MB: several blocks
    with open(path, "wb") as out:
        for at in range(0, len(body), 65536):  # many WRITE requests, one commit at close
            out.write(body[at : at + 65536])
    print(n, flush=True)
"""


def test_changes_behind_a_mount_reached_through_a_symlink_show(
    mount_factory: Callable[..., Mount], tmp_path: Path
) -> None:
    """A mountpoint named through a symbolic link (``/home`` a link, as on Fedora
    Atomic): the daemon knows its mount in /proc/self/mountinfo by the resolved path and
    keeps invalidating (a literal match turned invalidation off for good)."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    mounted = mount_factory(at=tmp_path / "link" / "mnt")
    key = mounted.path / "default" / "k"
    key.write_bytes(b"short")
    assert key.stat().st_size == 5  # cached by the kernel for 30 s
    assert mounted.kyfs("set", "-w", "default", "k", "a longer value").returncode == 0
    eventually(lambda: key.stat().st_size == len(b"a longer value"), 5.0)


def test_two_daemons_write_one_key_last_close_wins_whole(
    mount_factory: Callable[..., Mount],
) -> None:
    """Two daemons on the same data, one writer through each, writing the same key over
    and over: the stored value is always one writer's whole value, never a mix of both
    (a close commits in one transaction; the last committed close wins), and at the end
    both mounts show the same last value. (A reader through the writer's own mount sees
    its writes as they happen, as on tmpfs, so the stored value is read directly.)"""
    from kyfs.core.errors import KeyNotFound
    from kyfs.engine import open_engine

    one, two = mount_factory(), mount_factory(name="second")
    rounds = 12
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(m.path / "default" / "contended"), tag, str(rounds)],
            stdout=subprocess.DEVNULL,
        )
        for m, tag in ((one, "AA"), (two, "BB"))
    ]
    seen: set[bytes] = set()
    engine = open_engine()
    try:
        while any(w.poll() is None for w in writers):
            with engine.using("default") as ws:
                try:
                    data = ws.get("contended")
                except KeyNotFound:
                    continue
            if data:  # an O_TRUNC that is not yet followed by its close is empty
                assert len(data) == 1_600_000 and data == data[:8] * 200_000, "torn value"
                seen.add(data[:2])
    finally:
        engine.close()
    for w in writers:
        assert w.wait(timeout=120) == 0
    assert seen  # the stored value was looked at while both wrote
    engine = open_engine()
    try:
        with engine.using("default") as ws:
            final = ws.get("contended")
    finally:
        engine.close()
    assert final[:8] in (b"AA%06d" % (rounds - 1), b"BB%06d" % (rounds - 1))
    for m in (one, two):  # both mounts show the last committed close
        eventually(lambda m=m: (m.path / "default" / "contended").read_bytes() == final, 5.0)


def test_unlinked_while_open_never_becomes_a_key(mounted: Mount) -> None:
    ws = mounted.path / "default"
    with (ws / "temp").open("wb") as handle:
        handle.write(b"scratch")
        handle.flush()
        os.unlink(ws / "temp")
    assert os.listdir(ws) == []
    assert mounted.kyfs("keys", "-w", "default").stdout == b""


def test_editor_style_save_by_rename(mounted: Mount) -> None:
    ws = mounted.path / "default"
    (ws / "notes.md").write_text("draft 1\n")
    (ws / ".notes.md.swp").write_text("draft 2\n")
    os.replace(ws / ".notes.md.swp", ws / "notes.md")
    assert (ws / "notes.md").read_text() == "draft 2\n"
    assert os.listdir(ws) == ["notes.md"]


def test_truncate_append_and_seek_writes(mounted: Mount) -> None:
    path = mounted.path / "default" / "f"
    path.write_bytes(b"0123456789")
    with path.open("r+b") as handle:
        handle.seek(20)
        handle.write(b"END")  # past the end: a hole of zeros
    assert path.read_bytes() == b"0123456789" + bytes(10) + b"END"
    os.truncate(path, 4)
    assert path.read_bytes() == b"0123"
    with path.open("ab") as handle:
        handle.write(b"+tail")
    assert path.read_bytes() == b"0123+tail"
    os.chmod(path, 0o600)
    assert path.stat().st_mode & 0o777 == 0o600
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    assert path.stat().st_mtime_ns == 2_000_000_000
    statvfs = os.statvfs(mounted.path)
    # IUsed = f_files - f_ffree: the root, each workspace's top directory, the file
    workspaces = len(os.listdir(mounted.path))
    assert statvfs.f_files - statvfs.f_ffree == 2 + workspaces and statvfs.f_blocks > 0


# --- the kyfs mount / kyfs unmount commands themselves -----------------------------------
@pytest.fixture
def mountpoint(tmp_path: Path, kyfs_home: Path) -> Iterator[Path]:
    require_mount()
    path = tmp_path / "kyfs"
    yield path
    if os.path.ismount(path) or is_stale(path):
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)


def kyfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kyfs", *args], capture_output=True, text=True, timeout=60
    )


def _daemon_pid(mountpoint: Path) -> int:
    from kyfs.fuse.daemon import read_record

    record = read_record(mountpoint)
    assert record is not None
    return int(record["pid"])


def test_background_mount_persists_empty_dirs_and_unmount_leaves_nothing(mountpoint: Path) -> None:
    done = kyfs("mount", str(mountpoint))
    assert done.returncode == 0, done.stderr
    assert str(mountpoint) in done.stdout
    assert os.path.ismount(mountpoint)
    pid = _daemon_pid(mountpoint)
    assert sorted(os.listdir(mountpoint)) == ["default", "shared"]  # made: there was none
    (mountpoint / "default" / "empty" / "nested").mkdir(parents=True)
    assert kyfs("mount", str(mountpoint)).returncode == 5  # already mounted
    done = kyfs("unmount", str(mountpoint))
    assert done.returncode == 0, done.stderr
    assert not os.path.ismount(mountpoint)
    assert not alive(pid), "the daemon is still running after unmount"
    assert kyfs("mount", str(mountpoint)).returncode == 0
    assert (mountpoint / "default" / "empty" / "nested").is_dir()  # survived the remount
    assert kyfs("unmount", str(mountpoint)).returncode == 0


def test_stale_mountpoint_is_recovered(mountpoint: Path) -> None:
    assert kyfs("mount", str(mountpoint)).returncode == 0
    (mountpoint / "default" / "k").write_bytes(b"kept")
    pid = _daemon_pid(mountpoint)
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if is_stale(mountpoint):
            break
        time.sleep(0.05)
    with pytest.raises(OSError) as info:  # stat(2) may be answered from the kernel's cache
        os.listdir(mountpoint)
    assert info.value.errno == 107  # ENOTCONN: "Transport endpoint is not connected"
    done = kyfs("mount", str(mountpoint))
    assert done.returncode == 0, done.stderr
    assert (mountpoint / "default" / "k").read_bytes() == b"kept"
    assert kyfs("unmount", str(mountpoint)).returncode == 0


def test_ls_l_of_a_directory_takes_its_attributes_from_readdirplus(
    mounted: Mount, tmp_path: Path
) -> None:
    """A listing answers the kernel's READDIRPLUS with every attribute, so `ls -l` of keys
    the kernel has never seen (written by the CLI) makes no lookup or getattr per key, and
    shows their true sizes."""
    import re

    from kyfs.vfs.control_tree import METRICS_TTL

    (tmp_path / "src" / "dir").mkdir(parents=True)
    for i in range(30):
        (tmp_path / "src" / "dir" / f"k{i:02d}").write_bytes(b"x" * i)
    assert mounted.kyfs("import", str(tmp_path / "src"), "-w", "default").returncode == 0

    def getattrs() -> int:
        time.sleep(METRICS_TTL + 0.1)  # the metrics file is rendered at most that often
        text = (mounted.path / ".kyfs" / "metrics").read_text()
        found = re.search(r'operations_total\{operation="getattr"\} (\d+)', text)
        return int(found.group(1)) if found else 0

    before = getattrs()
    listing = sh(f"ls -ln {mounted.path / 'default' / 'dir'}").stdout.decode().splitlines()[1:]
    asked = getattrs() - before
    sizes = {line.split()[-1]: int(line.split()[4]) for line in listing}
    assert sizes == {f"k{i:02d}": i for i in range(30)}
    assert asked < 5, f"{asked} getattr requests for one ls -l of 30 keys"


def _operations(mounted: Mount) -> dict[str, int]:
    """The daemon's operation counts (its metrics file, rendered at most every
    METRICS_TTL seconds: waited for)."""
    from kyfs.platform import metrics
    from kyfs.vfs.control_tree import METRICS_TTL

    time.sleep(METRICS_TTL + 0.1)
    text = (mounted.path / ".kyfs" / "metrics").read_text()
    return metrics.parse(text)["operations"]  # type: ignore[no-any-return]


def test_a_read_only_open_costs_no_flush(mounted: Mount) -> None:
    """close(2) of a key opened read-only sends no FLUSH (the kernel is told at open:
    noflush), whether its pages were cached or not; a close after a write still flushes,
    so the value is committed when close returns."""
    path = mounted.path / "default" / "f"
    path.write_bytes(b"value")
    before = _operations(mounted)
    for _ in range(3):
        assert sh(f"cat {path}").stdout == b"value"
    with open(path, "rb") as handle:
        assert handle.read() == b"value"
    after = _operations(mounted)
    assert after.get("open", 0) - before.get("open", 0) == 5  # 4 and the metrics file
    assert after.get("flush", 0) == before.get("flush", 0)
    assert after.get("release", 0) - before.get("release", 0) >= 4
    with open(path, "ab") as handle:
        handle.write(b" more")
    assert mounted.kyfs("get", "f").stdout == b"value more"  # committed at close
    assert _operations(mounted).get("flush", 0) == after.get("flush", 0) + 1


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("VmRSS not found")


def test_open_files_with_unsaved_writes_stay_in_bounded_memory(mounted: Mount) -> None:
    """200 files open at once, 2 MiB unsaved in each (400 MiB): what the daemon holds
    stays near its per-file and daemon-wide budgets (the rest spills), every file is
    whole after its close, and the memory goes back once they are closed."""
    ws = mounted.path / "default"
    before = _rss_kib(mounted.process.pid)
    chunk = os.urandom(1024 * 1024)
    handles = [(ws / f"open{n:03d}").open("wb") for n in range(200)]
    try:
        for handle in handles:
            handle.write(chunk)
            handle.write(chunk)
            handle.flush()
        held = _rss_kib(mounted.process.pid) - before
    finally:
        for handle in handles:
            handle.close()
    print(f"\ndaemon RSS: +{held / 1024:.0f} MiB with 400 MiB unsaved in 200 open files")
    assert held < 120 * 1024  # 200 x 256 KiB in memory, the rest in spill files
    assert all((ws / f"open{n:03d}").stat().st_size == 2 * 1024 * 1024 for n in range(200))
    assert (ws / "open123").read_bytes() == chunk + chunk
    eventually(lambda: _rss_kib(mounted.process.pid) - before < 60 * 1024)
