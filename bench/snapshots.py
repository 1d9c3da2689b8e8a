"""Workload 24, snapshots and forks (issue 29 item 2): a workspace of SIZE bytes (1 GiB;
``--quick`` 64 MiB) in 1,024 values, written through the engine, then

- ``kyfs snapshot create``: seconds, and bytes the workspace's files grew (after a
  checkpoint, so the WAL is counted in the file);
- ``kyfs fork``: seconds, and bytes the data directory grew;
- 100 changes in the fork (40 changed, 30 added, 30 deleted), and ``kyfs diff`` of the
  source against the fork: seconds, and how many keys it lists;
- SHA-256 of every value of the source and of its snapshot, before and after.

The issue's budgets: snapshot and fork each < 1 s and < 1 MiB on disk; the diff lists
exactly the 100. On the SQLite engine (one file per workspace), in the scratch folder
(a fork there is a copy on ext4), and again on XFS in a loop device when this machine
can make one (root, xfsprogs), where a fork is a reflink; disk growth there is the file
system's used bytes (statvfs), since a clone's file size counts bytes it shares.
Nothing here asserts anything (tests/test_fork.py and tests/test_fork_reflink.py do).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VALUES = 1024  # values in the workspace, each of SIZE / VALUES bytes


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _digests(engine: Any, name: str, snapshot: str | None = None) -> dict[str, str]:
    with engine.using(name) as ws:
        if snapshot is None:
            return {k: hashlib.sha256(ws.get(k)).hexdigest() for k in ws.keys()}
        keys = [k for k, f in ws.fingerprints(snapshot).items() if f.kind == 0o100000]
        return {k: hashlib.sha256(ws.snapshot_value(snapshot, k)).hexdigest() for k in keys}


def _used_bytes(place: Path) -> int:
    """Bytes in use on the file system of ``place`` (statvfs), after a sync: what a
    reflink adds, which file sizes do not show."""
    os.sync()
    found = os.statvfs(place)
    return (found.f_blocks - found.f_bfree) * found.f_frsize


@contextmanager
def _xfs(scratch: Path, size: int) -> Iterator[Path | None]:
    """A fresh XFS file system (reflinks on) in a loop device of ``size`` sparse bytes,
    mounted in ``scratch``; None where this machine cannot (not root, no mkfs.xfs)."""
    image, mountpoint = scratch / "xfs.img", scratch / "xfs"
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        yield None
        return
    mountpoint.mkdir(exist_ok=True)
    with image.open("wb") as out:
        out.truncate(size)
    made = subprocess.run(["mkfs.xfs", "-q", str(image)], capture_output=True)
    if (
        made.returncode
        or subprocess.run(
            ["mount", "-o", "loop", str(image), str(mountpoint)], capture_output=True
        ).returncode
    ):
        image.unlink(missing_ok=True)
        yield None
        return
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        image.unlink(missing_ok=True)


def run(scratch: Path, quick: bool) -> dict[str, Any]:
    """The figures of workload 24 (see the module), as {name: value}: on the scratch
    folder's file system, and again on XFS in a loop device (``snapshots.xfs.*``),
    where a fork is a reflink."""
    size = (64 if quick else 1024) * 1024 * 1024
    results = _run_at(scratch / "snapshots-home", size, "snapshots", _tree_bytes)
    with _xfs(scratch, 4 * size + (1 << 30)) as place:
        if place is not None:
            results.update(_run_at(place / "home", size, "snapshots.xfs", _used_bytes))
    return results


def _run_at(home: Path, size: int, tag: str, measure: Callable[[Path], int]) -> dict[str, Any]:
    """Workload 24 with KYFS_HOME ``home``: {``tag``.name: value}; disk growth as
    ``measure`` counts it (the files' sizes, or the file system's used bytes)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KYFS_HOME": str(home)}
    os.environ["KYFS_HOME"] = str(home)
    from kyfs.engine import open_engine_at

    rng = random.Random(24)
    engine = open_engine_at(None)
    results: dict[str, Any] = {f"{tag}.size_bytes": size}
    try:
        engine.create("src")
        with engine.using("src") as ws:
            for number in range(VALUES):
                ws.set(f"data/v{number:05}", rng.randbytes(size // VALUES))
            ws.checkpoint()
        source = _digests(engine, "src")
        data = home / "workspaces"
        before = measure(data)

        def kyfs(*args: str) -> tuple[float, str]:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "kyfs", *args], env=env,
                                  check=True, capture_output=True, text=True)  # fmt: skip
            return time.perf_counter() - started, done.stdout

        results[f"{tag}.create_s"], _ = kyfs("snapshot", "create", "src", "base")
        with engine.using("src") as ws:
            ws.checkpoint()
        results[f"{tag}.create_bytes"] = measure(data) - before
        before = measure(home)
        results[f"{tag}.fork_s"], _ = kyfs("fork", "src", "fork")
        results[f"{tag}.fork_bytes"] = measure(home) - before
        with engine.using("fork") as ws:
            for number in range(40):
                ws.set(f"data/v{number:05}", rng.randbytes(1000))
            for number in range(30):
                ws.set(f"new/k{number}", b"added")
            for number in range(100, 130):
                ws.delete(f"data/v{number:05}")
        results[f"{tag}.diff_s"], out = kyfs("diff", "src", "fork")
        results[f"{tag}.diff_listed"] = len(out.splitlines())
        results[f"{tag}.source_identical"] = _digests(engine, "src") == source
        results[f"{tag}.snapshot_identical"] = _digests(engine, "src", "base") == source
        results[f"{tag}.create_s_cli_start"], _ = kyfs("snapshot", "list", "src")
    finally:
        engine.close()
        os.environ.pop("KYFS_HOME", None)
    return results


def report(results: dict[str, Any]) -> None:
    """Print workload 24 against the issue's budgets, on each file system measured."""
    for tag, where in (("snapshots", "the scratch folder"), ("snapshots.xfs", "XFS")):
        if f"{tag}.create_s" in results:
            _report(results, tag, where)


def _report(results: dict[str, Any], tag: str, where: str) -> None:
    mib = 2**20

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    size = results[f"{tag}.size_bytes"] / mib
    start = results[f"{tag}.create_s_cli_start"]
    for what in ("create", "fork"):
        took, grew = results[f"{tag}.{what}_s"], results[f"{tag}.{what}_bytes"]
        print(
            f"24. {what} of a {size:.0f} MiB workspace on {where}: {took:.2f} s (a kyfs"
            f" command alone: {start:.2f} s; < 1 s: {verdict(took < 1)}), +{grew / mib:.2f}"
            f" MiB on disk (< 1 MiB: {verdict(grew < mib)})"
        )
    print(
        f"24. diff after 100 changes in the fork on {where}: {results[f'{tag}.diff_listed']}"
        f" keys listed (exactly 100: {verdict(results[f'{tag}.diff_listed'] == 100)}),"
        f" {results[f'{tag}.diff_s']:.2f} s; source and snapshot byte-identical:"
        f" {results[f'{tag}.source_identical']} / {results[f'{tag}.snapshot_identical']}"
    )


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(dir="/var/tmp") as where:
        found = run(Path(where), "--quick" in sys.argv)
    report(found)
