"""Shared fixtures: an isolated KYFS_HOME for every test, and real mounts.

Every test runs with ``KYFS_HOME`` in its own tmp_path, so no test touches the
real home. The ``mounted`` fixture starts the daemon in a subprocess
(``python -m kyfs mount --foreground``), waits until the mountpoint is mounted
(failing fast if the daemon died), and unmounts in teardown even when the test
failed: ``fusermount3 -u``, then ``-uz``, then it kills the daemon.

With ``KYFS_REQUIRE_MOUNT=1`` (set by .ci/run when /dev/fuse exists) a mount
test that cannot run fails instead of being skipped, and the session fails if
any test marked ``mount`` was skipped anyway.

PostgreSQL: ``pg_cluster`` starts one throwaway server for the session
(kyfs.engine.postgres.cluster: initdb into a temp dir, a Unix socket only) and
stops it at the end, even on failure; ``pg_url`` gives each test an empty database
of its own. Where PostgreSQL's server is not installed those tests are skipped, but
with ``KYFS_REQUIRE_POSTGRES=1`` (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REQUIRE_MOUNT = os.environ.get("KYFS_REQUIRE_MOUNT") == "1"
REQUIRE_POSTGRES = os.environ.get("KYFS_REQUIRE_POSTGRES") == "1"
MOUNT_TIMEOUT = 15.0  # seconds


@pytest.fixture(autouse=True)
def kyfs_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every kyfs location at a fresh directory; forget any workspace override."""
    home = tmp_path / "kyfs-home"
    home.mkdir()
    monkeypatch.setenv("KYFS_HOME", str(home))
    for name in (
        "KYFS_WORKSPACE",
        "KYFS_DATA",
        "KYFS_USER",
        "KYFS_CURSOR",
        "KYFS_ENGINE",
        "KYFS_DB_PATH",
        "NOTIFY_SOCKET",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


def _mount_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if not shutil.which("fusermount3"):
        return "fusermount3 is not installed (Debian package fuse3)"
    return None


@dataclass
class Mount:
    """A running kyfs daemon: ``path`` is the mountpoint, ``home`` its KYFS_HOME."""

    path: Path
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    def env(self) -> dict[str, str]:
        """An environment for CLI subprocesses that share this mount's data."""
        return {**os.environ, "KYFS_HOME": str(self.home)}

    def kyfs(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run the real ``python -m kyfs`` CLI against this mount's data directory."""
        return subprocess.run(
            [sys.executable, "-m", "kyfs", *args],
            env=self.env(),
            input=input,
            capture_output=True,
            check=False,
            timeout=60,
        )

    def peak_rss_kib(self) -> int:
        """The daemon's peak resident set size so far (VmHWM), KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("VmHWM not found")


def _wait_for_mount(mount: Mount) -> None:
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while time.monotonic() < deadline:
        if mount.process.poll() is not None:
            raise AssertionError(
                f"kyfs daemon exited with {mount.process.returncode} before mounting:\n"
                + mount.log.read_text(errors="replace")
            )
        if os.path.ismount(mount.path):
            return
        time.sleep(0.05)
    raise AssertionError("mount did not appear:\n" + mount.log.read_text(errors="replace"))


def _cleanup(mount: Mount) -> None:
    if os.path.ismount(mount.path) or is_stale(mount.path):
        done = subprocess.run(["fusermount3", "-u", str(mount.path)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["fusermount3", "-uz", str(mount.path)], capture_output=True)
    try:
        mount.process.wait(timeout=MOUNT_TIMEOUT)
    except subprocess.TimeoutExpired:
        mount.process.kill()
        mount.process.wait()


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie, ended but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def is_stale(path: Path) -> bool:
    """True when stat of ``path`` fails, as on a mountpoint whose daemon died (ENOTCONN)."""
    try:
        os.stat(path)
    except OSError:
        return True
    return False


def value_digests(workspace: str, snapshot: str | None = None) -> dict[str, str]:
    """SHA-256 (hex) of the value of every regular file of ``workspace`` now, or of its
    snapshot ``snapshot``, in the current KYFS_HOME (on the engine KYFS_ENGINE names)."""
    import hashlib

    from kyfs.core.nodes import REG
    from kyfs.engine import open_engine

    engine = open_engine()
    try:
        with engine.using(workspace) as ws:
            if snapshot is None:
                values = {key: ws.get(key) for key in ws.keys()}
            else:
                values = {
                    key: ws.snapshot_value(snapshot, key)
                    for key, found in ws.fingerprints(snapshot).items()
                    if found.kind == REG
                }
            return {key: hashlib.sha256(value).hexdigest() for key, value in values.items()}
    finally:
        engine.close()


def stored_values(workspace: str) -> dict[str, bytes]:
    """Every key and value of ``workspace`` in the current KYFS_HOME (on the engine
    KYFS_ENGINE names, SQLite by default), read in-process."""
    from kyfs.engine import open_engine

    workspaces = open_engine()
    try:
        store = workspaces.open(workspace)
        try:
            return {key: store.get(key) for key in store.keys()}
        finally:
            store.close()
    finally:
        workspaces.close()


def require_mount() -> None:
    """Skip (or, with KYFS_REQUIRE_MOUNT=1, fail) when FUSE cannot be used here."""
    reason = _mount_unavailable()
    if reason:
        if REQUIRE_MOUNT:
            pytest.fail(f"mount tests are required but cannot run: {reason}")
        pytest.skip(reason)


def start_mount(
    path: Path, home: Path, log: Path, options: str | None = None, flags: tuple[str, ...] = ()
) -> Mount:
    """Start ``python -m kyfs mount --foreground`` on ``path`` and wait until it is mounted."""
    path.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "kyfs", "mount", "--foreground", str(path), *flags]
    if options:
        command += ["-o", options]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            env={**os.environ, "KYFS_HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    mount = Mount(path, home, process, log)
    try:
        _wait_for_mount(mount)
    except BaseException:
        _cleanup(mount)
        raise
    return mount


def stop_mount(mount: Mount, check_log: bool = True) -> None:
    """Unmount, wait for the daemon, and check it exited cleanly without logging errors."""
    _cleanup(mount)
    log = mount.log.read_text(errors="replace")
    assert mount.process.returncode == 0, log
    if check_log:
        bad = [
            line
            for line in log.splitlines()
            if " ERROR " in line or " CRITICAL " in line or "Traceback" in line
        ]
        assert not bad, "the daemon logged errors:\n" + "\n".join(bad)


@pytest.fixture
def mount_factory(tmp_path: Path, kyfs_home: Path) -> Iterator[Callable[..., Mount]]:
    """Start mounts with options (``factory(options="allow_other")``); all stop in teardown."""
    require_mount()
    started: list[Mount] = []

    def factory(
        options: str | None = None,
        name: str = "mnt",
        at: Path | None = None,
        flags: tuple[str, ...] = (),
    ) -> Mount:
        mountpoint = at if at is not None else tmp_path / name
        mount = start_mount(mountpoint, kyfs_home, tmp_path / f"{name}.log", options, flags)
        started.append(mount)
        return mount

    try:
        yield factory
    finally:
        for mount in started:
            _cleanup(mount)
    for mount in started:
        stop_mount(mount)


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Any]:
    """kyfs.fuse.adapter.KyfsOperations called directly (no mount) on a fresh SQLite data
    directory holding workspace ``ws``; destroyed afterwards. Skips without libfuse3."""
    adapter = pytest.importorskip(
        "kyfs.fuse.adapter", reason="libfuse3 is not installed", exc_type=OSError
    )
    from kyfs.engine.sqlite.engine import SqliteEngine

    operations = adapter.KyfsOperations(SqliteEngine(cache=True), tmp_path / "spill")
    operations.mkdir("/ws", 0o755)
    yield operations
    operations.destroy("/")


def fuse_errno(call: Callable[..., object], *args: object) -> int:
    """The errno of the FuseOSError that ``call(*args)`` raises (fails when it raises none)."""
    from kyfs.fuse.binding import FuseOSError

    with pytest.raises(FuseOSError) as info:
        call(*args)
    return int(info.value.errno)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """One throwaway PostgreSQL server for the whole session (skipped, or with
    KYFS_REQUIRE_POSTGRES=1 failed, where the server is not installed)."""
    from kyfs.engine.postgres.cluster import Cluster, binaries

    if binaries() is None:
        reason = "PostgreSQL's server is not installed (Debian package postgresql)"
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL tests are required but cannot run: {reason}")
        pytest.skip(reason)
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


_databases = iter(range(1, 1_000_000))


@pytest.fixture
def pg_url(pg_cluster: object) -> Iterator[str]:
    """The URL of an empty database of this test's own on the session's server."""
    import psycopg

    base = pg_cluster.url  # type: ignore[attr-defined]
    name = f"test_{next(_databases)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield base.replace("/kyfs?", f"/{name}?")
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def both_engines(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once per engine (``pytest.mark.usefixtures("both_engines")``): with
    PostgreSQL, KYFS_ENGINE names an empty database of the test's own, which the daemon
    and the CLI commands the test starts inherit."""
    if request.param == "postgresql":
        monkeypatch.setenv("KYFS_ENGINE", request.getfixturevalue("pg_url"))
    return str(request.param)


@pytest.fixture
def mounted(mount_factory: Callable[..., Mount]) -> Mount:
    """A real kyfs mount at tmp_path/mnt with the ``default`` workspace."""
    return mount_factory()


_skipped_mount_tests: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # An xfail result is reported as skipped but the test ran against the mount.
    ran = hasattr(report, "wasxfail")
    if report.skipped and not ran and "mount" in report.keywords:
        _skipped_mount_tests.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRE_MOUNT and _skipped_mount_tests:
        print(
            "\nKYFS_REQUIRE_MOUNT=1 but mount tests were skipped: "
            + ", ".join(_skipped_mount_tests),
            file=sys.stderr,
        )
        session.exitstatus = 1
