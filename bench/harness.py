"""Benchmark plumbing: the three targets (native directory, Python loopback FUSE, kyfs),
timing, cache drops, peak RSS.

Figures are ratios against baselines measured in the same run, because absolute
times on shared machines drift. Nothing here asserts timings.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT = 15.0  # seconds


@dataclass
class Target:
    """A directory to run a workload in, and the daemon serving it (None for native)."""

    name: str
    root: Path  # where the workload writes
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def peak_rss_kib(self) -> int | None:
        """The serving daemon's peak resident set size (VmHWM) in KiB, or None."""
        if self.process is None:
            return None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return None

    def reset_peak_rss(self) -> None:
        """Reset VmHWM (Linux: write 5 to /proc/PID/clear_refs)."""
        if self.process is not None:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")


def drop_caches() -> bool:
    """sync, then drop the page, dentry and inode caches (root only); True when dropped."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def load_average() -> tuple[float, float, float]:
    """The machine's 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def median_time(
    run: Callable[[int], object], rounds: int, before: Callable[[int], object] | None = None
) -> float:
    """Median wall time in seconds of ``run(round)`` over ``rounds`` rounds after one
    warm-up (round 0); ``before(round)`` runs untimed before each."""
    times = []
    for number in range(rounds + 1):
        if before:
            before(number)
        started = time.perf_counter()
        run(number)
        if number:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def sh(command: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a shell command and fail loudly when it fails."""
    subprocess.run(["sh", "-c", command], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def _wait_mounted(mountpoint: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not os.path.ismount(mountpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log.read_text())
        time.sleep(0.05)


def _stop(mountpoint: Path, process: subprocess.Popen[bytes]) -> None:
    subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
        process.kill()
        process.wait()


@contextmanager
def native(workdir: Path) -> Iterator[Target]:
    """A plain directory on the same disk as the data directory."""
    root = workdir / "native"
    root.mkdir()
    try:
        yield Target("native", root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def loopback(workdir: Path) -> Iterator[Target]:
    """bench/loopback.py: a single-threaded mfusepy passthrough over a native directory."""
    source, mountpoint = workdir / "loopback-src", workdir / "loopback-mnt"
    source.mkdir()
    mountpoint.mkdir()
    log = workdir / "loopback.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.loopback", str(source), str(mountpoint)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
    try:
        _wait_mounted(mountpoint, process, log)
        yield Target("loopback", mountpoint, process)
    finally:
        _stop(mountpoint, process)
        shutil.rmtree(source, ignore_errors=True)


@contextmanager
def kyfs_mount(
    workdir: Path,
    home: Path | None = None,
    options: list[str] | None = None,
    engine: str | None = None,
    name: str = "kyfs",
) -> Iterator[Target]:
    """A real kyfs daemon with its own KYFS_HOME (``options``: more ``kyfs mount``
    arguments; ``engine``: a PostgreSQL URL, KYFS_ENGINE); yields the `default`
    workspace as target ``name``."""
    home = home or workdir / f"{name}-home"
    mountpoint = workdir / f"{name}-mnt"
    mountpoint.mkdir(exist_ok=True)
    env = {**os.environ, "KYFS_HOME": str(home)}
    env.pop("KYFS_ENGINE", None)
    if engine is not None:
        env["KYFS_ENGINE"] = engine
    log = workdir / f"{name}-daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "kyfs", "mount", "--foreground", str(mountpoint)),
                *(options or []),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_mounted(mountpoint, process, log)
        yield Target(name, mountpoint / "default", process, env)
    finally:
        _stop(mountpoint, process)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server with its defaults (fsync and synchronous_commit on,
    as a real one), on a Unix socket; yields its URL. The bench's own: stopped at the end."""
    from kyfs.engine.postgres.cluster import Cluster

    with Cluster(durable=True) as cluster:
        yield cluster.url


TARGETS = (native, loopback, kyfs_mount)


@contextmanager
def workdir() -> Iterator[Path]:
    """A scratch directory on the disk that holds /tmp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="kyfs-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
