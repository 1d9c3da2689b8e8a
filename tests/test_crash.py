"""Durability: SIGKILL the daemon at random moments; no fsync'd write may be lost,
whether it replaced a value whole, changed bytes inside one (which the block store cuts
again around the change), punched a hole in one (fallocate(2)) or exchanged two names
(renameat2(2) with RENAME_EXCHANGE), and every workspace's
own check (references, and each node's stored bytes against its extents) finds nothing.

Each round mounts with the real ``kyfs mount`` (which recovers the stale
mountpoint the previous kill left), checks every manifest entry and
``PRAGMA integrity_check`` of every workspace, then starts a writer that writes,
fsyncs and records sha256 sums in a manifest outside the mount, and kills the
daemon with SIGKILL after a random delay. KYFS_CRASH_ROUNDS sets the number of
rounds (10 by default, in CI; 20 in ``make faults``); KYFS_CRASH_SEED the random seed.
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

from kyfs.engine.sqlite.workspace import SqliteWorkspace
from kyfs.fuse.daemon import read_record
from kyfs.platform import paths
from tests.conftest import require_mount

pytestmark = pytest.mark.mount

ROUNDS = int(os.environ.get("KYFS_CRASH_ROUNDS", "10"))
SEED = int(os.environ.get("KYFS_CRASH_SEED", str(int(time.time()))))

WRITER = r"""
import ctypes, hashlib, os, random, sys
root, manifest, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
with open(manifest, "a") as out:
    try:
        while True:
            workspace = rng.choice(["default", "second"])
            name = f"k{rng.randrange(30):02d}"
            path = os.path.join(root, workspace, name)
            other = f"k{rng.randrange(30):02d}"
            swap = os.path.join(root, workspace, other)
            if other != name and os.path.exists(path) and os.path.exists(swap) and (
                rng.random() < 0.1
            ):  # renameat2(RENAME_EXCHANGE): each name then holds what the other held
                digests = {}
                for key, where in ((name, path), (other, swap)):
                    with open(where, "rb") as current:
                        digests[key] = hashlib.sha256(current.read()).hexdigest()
                swapped = {name: digests[other], other: digests[name]}
                for key, digest in swapped.items():
                    out.write(f"try {workspace}/{key} {digest}\n")
                out.flush()
                if libc.renameat2(-100, path.encode(), -100, swap.encode(), 2) != 0:
                    raise OSError(ctypes.get_errno(), "renameat2")
                for key, digest in swapped.items():  # acknowledged once renameat2 returned
                    out.write(f"ack {workspace}/{key} {digest}\n")
                out.flush()
                os.fsync(out.fileno())
                continue
            punch = None
            if os.path.exists(path) and rng.random() < 0.2:  # a hole punched in the value
                with open(path, "rb") as current:
                    data = bytearray(current.read())
                at = rng.randrange(len(data) + 1)
                punch = (at, rng.choice([1, 5000, 40_000, 300_000]))
                data[at : at + punch[1]] = bytes(len(data[at : at + punch[1]]))
                data, piece, flags, start = bytes(data), b"", os.O_WRONLY, at
            elif os.path.exists(path) and rng.random() < 0.5:  # a change inside the value,
                with open(path, "rb") as current:  # cut again around it (the block store)
                    data = bytearray(current.read())
                at = rng.randrange(len(data) + 1)
                piece = rng.randbytes(rng.choice([1, 100, 5000, 40_000]))
                data[at : at + len(piece)] = piece
                data = bytes(data)
                flags, start = os.O_WRONLY, at
            else:
                data = rng.randbytes(rng.choice([0, 10, 4000, 70_000, 600_000]))
                piece, flags, start = data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0
            digest = hashlib.sha256(data).hexdigest()
            # The attempt first: if the daemon dies inside fsync, the new value may or may
            # not have been committed, and either is right.
            out.write(f"try {workspace}/{name} {digest}\n")
            out.flush()
            fd = os.open(path, flags, 0o644)
            for offset in range(0, len(piece), 65536):
                os.pwrite(fd, piece[offset : offset + 65536], start + offset)
            if punch is not None and libc.fallocate(fd, 3, punch[0], punch[1]) != 0:
                raise OSError(ctypes.get_errno(), "fallocate")  # PUNCH_HOLE | KEEP_SIZE
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
        workspace = SqliteWorkspace(db)
        try:
            assert workspace.check() == [], db
        finally:
            workspace.close()
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


def _v7_file(path: Path, values: dict[str, bytes]) -> None:
    """A workspace file at schema version 7 (before the block store) holding ``values``,
    made with the migrations themselves: fixed 256 KiB blocks, versions as whole values
    in history rows."""
    from kyfs.engine.sqlite import schema

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for number, migration in enumerate(schema.MIGRATIONS[:7], start=1):
        conn.execute("BEGIN")
        migration(conn)
        conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    conn.execute("BEGIN")
    now = time.time_ns()
    for n, (key, value) in enumerate(sorted(values.items()), start=100):
        conn.execute(
            "INSERT INTO nodes (id, kind, mode, uid, gid, nlink, size, created_ns, mtime_ns,"
            " ctime_ns, atime_ns) VALUES (?, 32768, 420, 0, 0, 1, ?, ?, ?, ?, ?)",
            (n, len(value), now, now, now, now),
        )
        conn.execute("INSERT INTO entries (key, parent, node) VALUES (?, '', ?)", (key, n))
        conn.execute("INSERT INTO index_pending (node_id) VALUES (?)", (n,))
        for idx in range(0, max(1, (len(value) + 262143) // 262144)):
            piece = value[idx * 262144 : (idx + 1) * 262144]
            conn.execute(
                "INSERT INTO blocks (node_id, idx, data) VALUES (?, ?, ?)", (n, idx, piece)
            )
        conn.execute(
            "INSERT INTO history (key, action, value, time_ns) VALUES (?, 'set', ?, ?)",
            (key, value, now),
        )
    conn.execute("COMMIT")
    conn.close()


def test_sigkill_in_a_migration_or_a_compact_keeps_every_value(tmp_path: Path) -> None:
    """The upgrade to the block store (m008) and kyfs compact rewrite a whole file: a
    SIGKILL at any moment of either leaves every value and version readable, whole,
    and the file sound (each is one transaction, or SQLite's VACUUM)."""
    rng = random.Random(SEED)
    values = {f"k{n:02d}": rng.randbytes(rng.choice([1000, 300_000, 900_000])) for n in range(60)}
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in values.items()}
    home = tmp_path / "home"
    env = {**os.environ, "KYFS_HOME": str(home)}
    workspaces = home / "workspaces"
    workspaces.mkdir(parents=True)
    opened = (
        "import sys; from pathlib import Path; from kyfs.engine.sqlite.workspace import"
        " SqliteWorkspace; SqliteWorkspace(Path(sys.argv[1])).close()"
    )
    for attempt in range(6):
        db = workspaces / "default.db"
        for part in (db, *paths.sidecar_files(db)):
            part.unlink(missing_ok=True)
        _v7_file(db, values)
        commands = [  # each with a window of time to kill it in (measured: 0.6 s, 0.3 s)
            ([sys.executable, "-c", opened, str(db)], 0.7),  # the migration, as opens run it
            ([sys.executable, "-m", "kyfs", "compact", "-w", "default"], 0.35),  # a compact
        ]
        for command, window in commands:
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
            time.sleep(rng.uniform(0.05, window))
            process.kill()
            process.wait()
        ws = SqliteWorkspace(db)  # whatever state the kills left: it opens, upgraded
        try:
            assert ws.check() == [], f"attempt {attempt}"
            for key, digest in digests.items():
                assert hashlib.sha256(ws.get(key)).hexdigest() == digest, key
                kept = [h for h in ws.history(key) if h.size is not None]
                assert hashlib.sha256(ws.version_value(kept[0].id or 0)).hexdigest() == digest
        finally:
            ws.close()
