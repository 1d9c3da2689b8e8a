"""Benchmark plumbing: targets to compare (native directory, kyfs mount), timing, cache drops.

Figures are printed as ratios against a baseline measured in the same run,
because absolute times on shared machines drift. Nothing here asserts timings.
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
    run: Callable[[], object], rounds: int, before: Callable[[], object] | None = None
) -> float:
    """Median wall time in seconds of ``run`` over ``rounds`` rounds, after one warm-up."""
    if before:
        before()
    run()  # warm-up
    times = []
    for _ in range(rounds):
        if before:
            before()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def sh(command: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a shell command and fail loudly when it fails."""
    subprocess.run(["sh", "-c", command], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


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
def kyfs_mount(workdir: Path, home: Path | None = None) -> Iterator[Target]:
    """A real kyfs daemon with its own KYFS_HOME; yields the `default` workspace."""
    home = home or workdir / "kyfs-home"
    mountpoint = workdir / "kyfs-mnt"
    mountpoint.mkdir(exist_ok=True)
    env = {**os.environ, "KYFS_HOME": str(home)}
    log = open(workdir / "kyfs-daemon.log", "wb")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "kyfs", "mount", "--foreground", str(mountpoint)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not os.path.ismount(mountpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "kyfs-daemon.log").read_text())
            time.sleep(0.05)
        yield Target("kyfs", mountpoint / "default", process, env)
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
            process.kill()
            process.wait()
        log.close()


@contextmanager
def workdir() -> Iterator[Path]:
    """A scratch directory on the disk that holds /tmp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="kyfs-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
