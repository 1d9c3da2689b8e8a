"""Durability: SIGKILL the daemon at random moments; no fsync'd write may be lost.

Each round mounts with the real ``kyfs mount`` (which recovers the stale
mountpoint the previous kill left), checks every manifest entry and
``PRAGMA integrity_check`` of every workspace, then starts a writer that writes,
fsyncs and records sha256 sums in a manifest outside the mount, and kills the
daemon with SIGKILL after a random delay. KYFS_CRASH_ROUNDS sets the number of
rounds (default 20); KYFS_CRASH_SEED the random seed.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kyfs.fuse.daemon import read_record
from kyfs.platform import paths
from tests.conftest import require_mount

pytestmark = pytest.mark.mount

ROUNDS = int(os.environ.get("KYFS_CRASH_ROUNDS", "20"))
SEED = int(os.environ.get("KYFS_CRASH_SEED", str(int(time.time()))))

WRITER = r"""
import hashlib, os, random, sys
root, manifest, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
with open(manifest, "a") as out:
    try:
        while True:
            workspace = rng.choice(["default", "second"])
            name = f"k{rng.randrange(30):02d}"
            data = rng.randbytes(rng.choice([0, 10, 4000, 70_000, 600_000]))
            path = os.path.join(root, workspace, name)
            digest = hashlib.sha256(data).hexdigest()
            # The attempt first: if the daemon dies inside fsync, the new value may or may
            # not have been committed, and either is right.
            out.write(f"try {workspace}/{name} {digest}\n")
            out.flush()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for offset in range(0, len(data), 65536):
                os.write(fd, data[offset : offset + 65536])
            os.fsync(fd)  # acknowledged: from here on it must survive
            out.write(f"ack {workspace}/{name} {digest}\n")
            out.flush()
            os.fsync(out.fileno())
            os.close(fd)
    except OSError:
        pass
"""


def kyfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kyfs", *args], capture_output=True, text=True, timeout=60
    )


def expected(manifest: Path) -> dict[str, set[str]]:
    """For each key, the digests it may hold: the last acknowledged one, plus any
    attempted after it (a write whose fsync the crash interrupted)."""
    allowed: dict[str, set[str]] = {}
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            kind, name, digest = line.split()
            if kind == "ack":
                allowed[name] = {digest}
            else:
                allowed.setdefault(name, {EMPTY_OR_MISSING}).add(digest)
    return allowed


EMPTY_OR_MISSING = "never acknowledged"


def verify(mountpoint: Path, manifest: Path) -> int:
    acknowledged = 0
    for name, digests in expected(manifest).items():
        path = mountpoint / name
        if EMPTY_OR_MISSING in digests and not path.exists():
            continue
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if EMPTY_OR_MISSING in digests and actual == hashlib.sha256(b"").hexdigest():
            continue  # created, then the crash came before any fsync
        assert actual in digests, f"{name}: acknowledged write lost"
        acknowledged += EMPTY_OR_MISSING not in digests
    for db in paths.workspaces_dir().glob("*.db"):
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", db
        finally:
            conn.close()
    return acknowledged


def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    require_mount()
    rng = random.Random(SEED)
    mountpoint = tmp_path / "mnt"
    manifest = tmp_path / "manifest.txt"
    kills = verified = 0
    try:
        for round_number in range(ROUNDS):
            done = kyfs("mount", str(mountpoint))
            assert done.returncode == 0, f"round {round_number}: {done.stderr}"
            if round_number == 0:
                (mountpoint / "second").mkdir()
            verified = verify(mountpoint, manifest)
            record = read_record(mountpoint)
            assert record is not None
            writer = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WRITER,
                    str(mountpoint),
                    str(manifest),
                    str(rng.randrange(2**32)),
                ]
            )
            time.sleep(rng.uniform(0.05, 0.6))
            os.kill(record["pid"], signal.SIGKILL)
            kills += 1
            writer.wait(timeout=60)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.listdir(mountpoint)  # stat(2) may come from the kernel's cache
                except OSError:
                    break  # ENOTCONN: stale, as a crash leaves it
                time.sleep(0.02)
        assert kyfs("mount", str(mountpoint)).returncode == 0
        verified = verify(mountpoint, manifest)
        assert kyfs("unmount", str(mountpoint)).returncode == 0
    finally:
        if os.path.ismount(mountpoint) or not os.path.exists(mountpoint):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
    lines = manifest.read_text().splitlines() if manifest.exists() else []
    writes = sum(1 for line in lines if line.startswith("ack "))
    print(
        f"\ncrash test: seed {SEED}, {kills} SIGKILLs, {writes} fsync'd writes recorded, "
        f"{verified} keys verified at the end, integrity_check ok"
    )
    assert kills == ROUNDS and writes > ROUNDS
