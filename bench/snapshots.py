"""Workload 24, snapshots and forks (issue 29 item 2): a workspace of SIZE bytes (1 GiB;
``--quick`` 64 MiB) in 1,024 values, written through the engine, then

- ``kyfs snapshot create``: seconds, and bytes the workspace's files grew (after a
  checkpoint, so the WAL is counted in the file);
- ``kyfs fork``: seconds, and bytes the data directory grew;
- 100 changes in the fork (40 changed, 30 added, 30 deleted), and ``kyfs diff`` of the
  source against the fork: seconds, and how many keys it lists;
- SHA-256 of every value of the source and of its snapshot, before and after.

The issue's budgets: snapshot and fork each < 1 s and < 1 MiB on disk; the diff lists
exactly the 100. On the SQLite engine (one file per workspace); nothing here asserts
anything (tests/test_fork.py does).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
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


def run(scratch: Path, quick: bool) -> dict[str, Any]:
    """The figures of workload 24 (see the module), as {name: value}."""
    size = (64 if quick else 1024) * 1024 * 1024
    home = scratch / "snapshots-home"
    env = {**os.environ, "KYFS_HOME": str(home)}
    os.environ["KYFS_HOME"] = str(home)
    from kyfs.engine import open_engine_at

    rng = random.Random(24)
    engine = open_engine_at(None)
    results: dict[str, Any] = {"snapshots.size_bytes": size}
    try:
        engine.create("src")
        with engine.using("src") as ws:
            for number in range(VALUES):
                ws.set(f"data/v{number:05}", rng.randbytes(size // VALUES))
            ws.checkpoint()
        source = _digests(engine, "src")
        data = home / "workspaces"
        before = _tree_bytes(data)

        def kyfs(*args: str) -> tuple[float, str]:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "kyfs", *args], env=env,
                                  check=True, capture_output=True, text=True)  # fmt: skip
            return time.perf_counter() - started, done.stdout

        results["snapshots.create_s"], _ = kyfs("snapshot", "create", "src", "base")
        with engine.using("src") as ws:
            ws.checkpoint()
        results["snapshots.create_bytes"] = _tree_bytes(data) - before
        before = _tree_bytes(home)
        results["snapshots.fork_s"], _ = kyfs("fork", "src", "fork")
        results["snapshots.fork_bytes"] = _tree_bytes(home) - before
        with engine.using("fork") as ws:
            for number in range(40):
                ws.set(f"data/v{number:05}", rng.randbytes(1000))
            for number in range(30):
                ws.set(f"new/k{number}", b"added")
            for number in range(100, 130):
                ws.delete(f"data/v{number:05}")
        results["snapshots.diff_s"], out = kyfs("diff", "src", "fork")
        results["snapshots.diff_listed"] = len(out.splitlines())
        results["snapshots.source_identical"] = _digests(engine, "src") == source
        results["snapshots.snapshot_identical"] = _digests(engine, "src", "base") == source
        results["snapshots.create_s_cli_start"], _ = kyfs("snapshot", "list", "src")
    finally:
        engine.close()
        os.environ.pop("KYFS_HOME", None)
    return results


def report(results: dict[str, Any]) -> None:
    """Print workload 24 against the issue's budgets."""
    if "snapshots.create_s" not in results:
        return
    mib = 2**20

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    size = results["snapshots.size_bytes"] / mib
    start = results["snapshots.create_s_cli_start"]
    for what in ("create", "fork"):
        took, grew = results[f"snapshots.{what}_s"], results[f"snapshots.{what}_bytes"]
        print(
            f"24. {what} of a {size:.0f} MiB workspace: {took:.2f} s (a kyfs command alone:"
            f" {start:.2f} s; < 1 s: {verdict(took < 1)}), +{grew / mib:.2f} MiB on disk"
            f" (< 1 MiB: {verdict(grew < mib)})"
        )
    print(
        f"24. diff after 100 changes in the fork: {results['snapshots.diff_listed']} keys"
        f" listed (exactly 100: {verdict(results['snapshots.diff_listed'] == 100)}),"
        f" {results['snapshots.diff_s']:.2f} s; source and snapshot byte-identical:"
        f" {results['snapshots.source_identical']} / {results['snapshots.snapshot_identical']}"
    )


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(dir="/var/tmp") as where:
        found = run(Path(where), "--quick" in sys.argv)
    report(found)
