"""Several processes writing at once: through the CLI's code, the real CLI and the mount."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kyfs.engine.sqlite.engine import SqliteEngine
from tests.conftest import Mount, stored_values

# The CLI's own code path (open the workspace, set, close) in a loop: thousands of
# writes without thousands of interpreter start-ups.
CLI_WRITER = r"""
import sys
from kyfs.engine.sqlite.engine import SqliteEngine
workspace, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    w = SqliteEngine()
    with w.shared():
        s = w.open(workspace)
        s.set(f"{prefix}/{i:05d}", f"{prefix}-{i}".encode())
        s.close()
    w.close()
"""

MOUNT_WRITER = r"""
import os, sys
root, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(os.path.join(root, prefix), exist_ok=True)
for i in range(count):
    with open(os.path.join(root, prefix, f"{i:05d}"), "wb") as f:
        f.write(f"{prefix}-{i}".encode())
"""


@pytest.mark.mount
def test_cli_and_mount_write_one_workspace_at_once(mounted: Mount) -> None:
    ws = mounted.path / "default"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLI_WRITER, "default", f"cli{n}", "2000"],
            env=mounted.env(),
            stderr=subprocess.PIPE,
        )
        for n in range(2)
    ] + [
        subprocess.Popen(
            [sys.executable, "-c", MOUNT_WRITER, str(ws), f"mnt{n}", "1000"],
            stderr=subprocess.PIPE,
        )
        for n in range(2)
    ]
    shell_loop = (
        "for i in $(seq 1 25); do "
        f"{sys.executable} -m kyfs set -w default real/$i value-$i || exit 1; done"
    )
    real = subprocess.Popen(["sh", "-c", shell_loop], env=mounted.env(), stderr=subprocess.PIPE)
    for proc in [*procs, real]:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
        assert b"locked" not in err
    values = stored_values("default")
    for n in range(2):
        for i in range(2000):
            assert values[f"cli{n}/{i:05d}"] == f"cli{n}-{i}".encode()
        for i in range(1000):
            assert values[f"mnt{n}/{i:05d}"] == f"mnt{n}-{i}".encode()
    for i in range(1, 26):
        assert values[f"real/{i}"] == f"value-{i}".encode()
    assert len(values) == 2 * 2000 + 2 * 1000 + 25


HOLD_LOCK = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO meta (name, value) VALUES ('held', 'by another process')")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


@contextlib.contextmanager
def _write_locked(workspace: str) -> Iterator[None]:
    """Another process holds ``workspace``'s SQLite write lock for the ``with`` block."""
    engine = SqliteEngine()
    path = engine.directory / f"{workspace}.db"
    engine.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == b"locked\n"
        yield
    finally:
        holder.stdin.write(b"\n")
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()


def test_two_workspaces_do_not_wait_on_each_other(tmp_path: Path) -> None:
    env = dict(os.environ)

    def kyfs(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "kyfs", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    for name in ("alpha", "beta"):
        created = kyfs("create", name)
        created.communicate(timeout=60)
        assert created.returncode == 0
    with _write_locked("alpha"):
        waiting = kyfs("set", "-w", "alpha", "k", "a")  # must wait for the holder
        # While alpha's write lock is held, beta takes writes.
        beta = kyfs("set", "-w", "beta", "k", "b")
        beta.communicate(timeout=60)
        assert beta.returncode == 0
        assert waiting.poll() is None, "the write to alpha did not wait for the lock"
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert stored_values("alpha")["k"] == b"a"
    assert stored_values("beta")["k"] == b"b"


# Writes one key through the mount, then prints when its close(2) returned (the
# system-wide monotonic clock, comparable across processes).
MOUNT_WRITE_ONE = r"""
import sys, time
with open(sys.argv[1], "w") as f:
    f.write(sys.argv[2])
print(time.monotonic(), flush=True)
"""


@pytest.mark.mount
def test_a_locked_workspace_does_not_stall_the_mount(mounted: Mount) -> None:
    """Another process holds alpha's write lock: a write to alpha through the mount waits
    for it, and meanwhile reads and writes of beta through the same mount are served
    (before the alpha write's close returns, which a single-threaded daemon cannot do)."""
    for name in ("alpha", "beta"):
        (mounted.path / name).mkdir()
    (mounted.path / "beta" / "existing").write_text("before")
    with _write_locked("alpha"):
        writer = subprocess.Popen(
            [sys.executable, "-c", MOUNT_WRITE_ONE, str(mounted.path / "alpha" / "k"), "a"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _wait_in_fuse_request(writer)  # its create now waits on alpha's lock
        read = subprocess.run(["cat", str(mounted.path / "beta" / "existing")],
                              capture_output=True, timeout=60, check=True)  # fmt: skip
        subprocess.run(["sh", "-c", f"echo new > {mounted.path}/beta/new"], timeout=60,
                       check=True)  # fmt: skip
        listed = os.listdir(mounted.path / "beta")
        beta_done = time.monotonic()
        assert writer.poll() is None, "the write to alpha did not wait for the lock"
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert beta_done < float(out), "beta was served only after alpha's write returned"
    assert read.stdout == b"before"
    assert sorted(listed) == ["existing", "new"]
    assert stored_values("alpha")["k"] == b"a"
    assert stored_values("beta")["new"] == b"new\n"


def _wait_in_fuse_request(process: subprocess.Popen[bytes]) -> None:
    """Wait until ``process`` sleeps in the kernel waiting for a FUSE answer
    (/proc/PID/wchan: request_wait_answer), or for 2 s where the kernel hides wchan."""
    wchan = Path(f"/proc/{process.pid}/wchan")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        where = wchan.read_text()
        if "fuse" in where or "request_wait_answer" in where:
            return
        time.sleep(0.02)
    raise AssertionError(f"the writer never waited on the mount (wchan {where!r})")


STATFS_LOOP = r"""
import os, sys
for _ in range(300):
    os.statvfs(sys.argv[1])
"""


@pytest.mark.mount
def test_statfs_from_every_workspace_at_once(mounted: Mount) -> None:
    """statfs visits every workspace; four of them at once, each asked from inside a
    different workspace, must all finish (a thread holding its own workspace while it
    waits for the others' would deadlock against the next)."""
    for n in range(4):
        (mounted.path / f"w{n}").mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", STATFS_LOOP, str(mounted.path / f"w{n}")])
        for n in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
