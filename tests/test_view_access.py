"""Permissions of the mount's virtual trees on a mount shared with ``-o allow_other``
(issue 26): for every kind of path and every operation, what another unix user gets
through ``.versions``, ``.snapshots``, ``/.search`` and ``/.kyfs`` equals what they get on
the real key or directory (EACCES where that denies). Real processes as other users
(setpriv), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kyfs.fuse.invalidate import LATE, SOON
from tests.conftest import Mount, _cleanup

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("both_engines")]

ALICE, BOB = 1001, 1002
POLL = 0.05  # seconds between two looks at whether the kernel still holds a name
CALLERS = {
    "alice": ["setpriv", f"--reuid={ALICE}", f"--regid={ALICE}", "--clear-groups"],
    "bob": ["setpriv", f"--reuid={BOB}", f"--regid={BOB}", "--clear-groups"],
    "bob in alice's group": ["setpriv", f"--reuid={BOB}", f"--regid={BOB}", f"--groups={ALICE}"],
}
# key -> (owner uid, group, mode); directories end in /
LAYOUT = {
    "private/": (ALICE, ALICE, 0o700),
    "private/token": (ALICE, ALICE, 0o600),
    "team/": (ALICE, ALICE, 0o750),
    "team/plan": (ALICE, ALICE, 0o640),
    "secret": (0, 0, 0o600),
    "grouped": (ALICE, ALICE, 0o640),
    "public": (0, 0, 0o644),
}


@pytest.fixture
def shared_mount(mount_factory: Callable[..., Mount]) -> Iterator[Mount]:
    """A mount with allow_other at a path other users can traverse, holding LAYOUT with
    two versions of each key, every one of them matching the word "zebra"."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    top = Path(tempfile.mkdtemp(prefix="kyfs-views-"))
    top.chmod(0o755)
    mount = None
    try:
        mount = mount_factory(options="allow_other", at=top / "mnt")
        ws = mount.path / "default"
        os.chmod(ws, 0o755)
        for key, (uid, gid, mode) in LAYOUT.items():
            path = ws / key.rstrip("/")
            if key.endswith("/"):
                path.mkdir()
            else:
                for n in (1, 2):
                    path.write_text(f"zebra {key} version {n}\n")
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        yield mount
    finally:
        if mount is not None:  # unmounted before its folder goes (which left it behind)
            _cleanup(mount)
        shutil.rmtree(top, ignore_errors=True)


def as_user(caller: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CALLERS[caller], *command], capture_output=True, text=True)


def until_gone(deadline: float, caller: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as ``caller`` every POLL seconds until it fails or ``deadline``
    (time.monotonic()) passes; the last run."""
    while True:
        done = as_user(caller, *command)
        if done.returncode != 0 or time.monotonic() > deadline:
            return done
        time.sleep(POLL)


def test_versions_answer_as_the_real_paths(shared_mount: Mount) -> None:
    ws = shared_mount.path / "default"
    versions = ws / ".versions"
    leaks = []
    checked = 0
    for caller in CALLERS:
        for key in LAYOUT:
            real = ws / key.rstrip("/")
            view = versions / key.rstrip("/")
            if key.endswith("/"):
                pairs = [("list", ["ls", str(real)], ["ls", str(view)])]
            else:
                version = sorted(os.listdir(view))[0]  # as root
                xattr = ["getfattr", "-n", "user.kyfs.created_at"]
                pairs = [
                    ("read", ["cat", str(real)], ["cat", str(view / version)]),
                    ("stat", ["stat", str(real)], ["stat", str(view / version)]),
                    ("list versions", ["cat", str(real)], ["ls", str(view)]),
                    ("getxattr", [*xattr, str(real)], [*xattr, str(view / version)]),
                ]
            for operation, on_real, on_view in pairs:
                expected = as_user(caller, *on_real)
                got = as_user(caller, *on_view)
                checked += 1
                if operation == "getxattr":  # a view has no attributes: ENODATA at best
                    assert got.returncode != 0
                    if "Permission denied" in expected.stderr:
                        assert "Permission denied" in got.stderr, (caller, key, got.stderr)
                    else:
                        assert "No such attribute" in got.stderr, (caller, key, got.stderr)
                elif (expected.returncode == 0) != (got.returncode == 0):
                    leaks.append((caller, key, operation, expected.stderr, got.stderr))
                elif got.returncode != 0:
                    assert "Permission denied" in got.stderr, got.stderr  # EACCES
    assert checked == 3 * (2 + 5 * 4)
    assert leaks == []
    # the matrix holds both answers: some readable, some refused
    assert as_user("bob", "cat", str(versions / "public" / os.listdir(versions / "public")[0]))
    refused = as_user("bob", "ls", str(versions / "private"))
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    assert as_user("alice", "ls", str(versions / "private")).returncode == 0


def test_search_lists_only_what_the_caller_could_open(shared_mount: Mount) -> None:
    root = shared_mount.path
    keys = [key for key in LAYOUT if not key.endswith("/")]
    deadline = time.monotonic() + 30
    while True:  # the daemon indexes in the background
        seen = os.listdir(root / ".search" / "zebra")
        if len(seen) == len(keys) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
        os.utime(root / ".search")  # a new second: the cached listing goes
    assert len(seen) == len(keys), seen
    for caller in CALLERS:
        readable = {
            key
            for key in keys
            if as_user(caller, "cat", str(root / "default" / key)).returncode == 0
        }
        done = as_user(
            caller, "sh", "-c", f'cd {root}/.search/zebra && for l in *; do readlink "$l"; done'
        )
        assert done.returncode == 0, done.stderr
        shown = {line.removeprefix("../../default/") for line in done.stdout.split()}
        assert shown == readable, caller
        numbers = sorted(
            int(name.split("-")[0])
            for name in as_user(caller, "ls", f"{root}/.search/zebra").stdout.split()
        )
        assert numbers == list(range(1, len(readable) + 1))  # no gaps tell of hidden hits
    assert {"public"} <= readable  # the last caller reads some, and not all
    assert "secret" not in readable
    # The kernel keeps what root's lookup of a link got (attr_timeout, 30 s) for every
    # user: it must not answer bob's stat of that name from its cache (an oracle of
    # which keys hold the word).
    hidden = next(name for name in seen if name.endswith("-default-secret"))
    link = f"{root}/.search/zebra/{hidden}"
    assert os.lstat(link)
    # The daemon drops it SOON s after the reply, and again up to LATE s later for a reply
    # a loaded machine was slow to deliver: by then it is gone, far below attr_timeout.
    deadline = time.monotonic() + SOON + LATE + 1.5
    for caller in CALLERS:  # test -L: lstat(2) alone (stat(1) also reads the link)
        tested = until_gone(deadline, caller, "test", "-L", link)
        assert tested.returncode == 1, (caller, tested.stderr)
        # nor from the name alone: statx(AT_STATX_DONT_SYNC) answers from the kernel's
        # cache whatever it still holds
        cached = until_gone(deadline, caller, "stat", "--cached=always", "-c", "%i", link)
        assert cached.returncode != 0 and "No such file" in cached.stderr, (caller, cached.stdout)
    assert os.path.islink(root / ".search" / "zebra" / hidden)  # root still sees it


def test_control_files_belong_to_the_mounting_user(shared_mount: Mount) -> None:
    metrics = shared_mount.path / ".kyfs" / "metrics"
    assert b"kyfs_operations_total" in metrics.read_bytes()  # root: the mounting user
    for caller in CALLERS:
        done = as_user(caller, "cat", str(metrics))
        assert done.returncode != 0 and "Permission denied" in done.stderr, caller


def test_versions_keep_the_most_restrictive_mode_their_key_had_since(shared_mount: Mount) -> None:
    ws = shared_mount.path / "default"
    diary = ws / "diary"
    # each write from its own process, so that the two are two versions (not one burst)
    subprocess.run(["sh", "-c", f"echo secret > {diary}"], check=True)
    diary.chmod(0o600)  # the secret was 0644 for a moment; it is private
    diary.chmod(0o644)
    subprocess.run(["sh", "-c", f"echo public > {diary}"], check=True)
    first, second = sorted(
        os.listdir(ws / ".versions" / "diary"), key=lambda n: int(n.split("-")[0])
    )
    assert (ws / ".versions" / "diary" / first).read_text() == "secret\n"  # root reads both
    assert as_user("bob", "cat", str(diary)).stdout == "public\n"
    assert as_user("bob", "cat", str(ws / ".versions" / "diary" / second)).stdout == "public\n"
    refused = as_user("bob", "cat", str(ws / ".versions" / "diary" / first))
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused.stdout
    assert stat_mode(ws / ".versions" / "diary" / first) == 0o400


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o7777


def _snapshot(name: str) -> None:
    """Snapshot ``name`` of workspace ``default``, made through the engine in this process."""
    from kyfs.app import open_engine

    engine = open_engine()
    try:
        with engine.using("default") as workspace:
            workspace.create_snapshot(name)
    finally:
        engine.close()


def test_snapshots_answer_as_the_real_paths(shared_mount: Mount) -> None:
    ws = shared_mount.path / "default"
    _snapshot("s1")
    view = ws / ".snapshots" / "s1"
    leaks = []
    for caller in CALLERS:
        for key in LAYOUT:
            real, shown = ws / key.rstrip("/"), view / key.rstrip("/")
            if key.endswith("/"):
                pairs = [("list", ["ls", str(real)], ["ls", str(shown)])]
            else:
                pairs = [
                    ("read", ["cat", str(real)], ["cat", str(shown)]),
                    ("stat", ["stat", str(real)], ["stat", str(shown)]),
                ]
            for operation, on_real, on_view in pairs:
                expected, got = as_user(caller, *on_real), as_user(caller, *on_view)
                if (expected.returncode == 0) != (got.returncode == 0):
                    leaks.append((caller, key, operation, expected.stderr, got.stderr))
                elif got.returncode != 0:
                    assert "Permission denied" in got.stderr, got.stderr  # EACCES
                elif operation == "read":
                    assert got.stdout == expected.stdout, (caller, key)
    assert leaks == []
    assert as_user("bob", "cat", str(view / "public")).returncode == 0
    refused = as_user("bob", "cat", str(view / "private" / "token"))
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    assert as_user("alice", "cat", str(view / "private" / "token")).stdout.startswith("zebra")
    for caller in CALLERS:  # the listing of snapshots is the workspace's to give
        assert as_user(caller, "ls", str(ws / ".snapshots")).stdout.split() == ["s1"]
    # a closed workspace closes its snapshots too
    os.chmod(ws, 0o700)
    time.sleep(0.1)
    for caller in CALLERS:
        done = as_user(caller, "cat", str(view / "public"))
        assert done.returncode != 0 and "Permission denied" in done.stderr, caller


def test_a_snapshot_keeps_no_acl_so_a_key_with_one_shows_owner_only(shared_mount: Mount) -> None:
    ws = shared_mount.path / "default"
    public = ws / "public"
    done = subprocess.run(["setfacl", "-m", f"u:{BOB}:---", str(public)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"no POSIX ACLs on this mount: {done.stderr!r}")
    _snapshot("s1")
    shown = ws / ".snapshots" / "s1" / "public"
    assert as_user("bob", "cat", str(public)).returncode != 0  # the ACL shuts bob out
    refused = as_user("bob", "cat", str(shown))
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    assert stat_mode(shown) == 0o600  # 0o644 less the group's and others' bits
    assert shown.read_text().startswith("zebra")  # root reads it
