"""Disk full: the data directory on a 6 MiB tmpfs. Writes fail with ENOSPC; what was
stored before stays intact and readable."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mount, require_mount, start_mount, stop_mount

pytestmark = pytest.mark.mount


@pytest.fixture
def small_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    require_mount()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    home = tmp_path / "small"
    home.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(home)], check=True
    )
    monkeypatch.setenv("KYFS_HOME", str(home))
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def test_enospc_and_nothing_lost(small_home: Path, tmp_path: Path) -> None:
    mount: Mount = start_mount(tmp_path / "mnt", small_home, tmp_path / "daemon.log")
    try:
        ws = mount.path / "default"
        keep = os.urandom(300_000)
        (ws / "keep").write_bytes(keep)
        (ws / "note").write_text("small note\n")
        # A new 16 MiB file cannot fit.
        done = subprocess.run(
            ["dd", "if=/dev/zero", f"of={ws / 'huge'}", "bs=1M", "count=16", "conv=fsync"],
            capture_output=True,
        )
        assert done.returncode != 0
        assert b"No space left on device" in done.stderr
        # Overwriting a stored key with a value that cannot fit keeps the old value.
        with pytest.raises(OSError) as info, (ws / "keep").open("wb") as handle:
            for _ in range(16):
                handle.write(b"\xff" * (1024 * 1024))
        assert info.value.errno == errno.ENOSPC
        assert (ws / "keep").read_bytes() == keep
        assert (ws / "note").read_text() == "small note\n"
        # Space comes back once the failed file is gone, and writes work again.
        os.unlink(ws / "huge")
        got = mount.kyfs("get", "-w", "default", "keep")
        assert got.returncode == 0 and got.stdout == keep
    finally:
        stop_mount(mount)
    for db in (small_home / "workspaces").glob("*.db"):
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
