"""Space policy without a mount: the undo cap releases the oldest undo data first, the
disk-full reserve comes and goes, and the settings that bound both are checked."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kyfs.app import keep_undo_under
from kyfs.core.errors import InvalidInput
from kyfs.engine.sqlite.engine import SqliteEngine
from kyfs.platform import config, reserve


@pytest.fixture
def engine(kyfs_home: Path) -> Iterator[SqliteEngine]:
    made = SqliteEngine()
    try:
        yield made
    finally:
        made.close()


def test_the_undo_cap_releases_the_oldest_first(engine: SqliteEngine) -> None:
    engine.create("w")
    with engine.using("w") as ws:
        ws.set("old", os.urandom(200_000))
        ws.set("old", b"replaced")  # the random value is now a version: undo data
        time.sleep(0.01)
        ws.set("new", os.urandom(200_000))
        ws.delete("new")  # archived: newer undo data
        before = ws.usage()
    assert before.history >= 200_000 and before.archive >= 200_000
    released = keep_undo_under(engine, 300_000)
    with engine.using("w") as ws:
        after = ws.usage()
        assert after.history + after.archive <= 300_000 and released > 0
        assert after.archive >= 200_000  # the newer undo data stayed
        assert ws.get("old") == b"replaced" and ws.archived("new")
    assert keep_undo_under(engine, 10**12) == 0  # under the cap: nothing to do


def test_the_undo_cap_empties_old_trash_too(engine: SqliteEngine) -> None:
    engine.create("gone")
    with engine.using("gone") as ws:
        ws.set("k", os.urandom(300_000))
    engine.drop("gone")
    assert engine.trash()
    keep_undo_under(engine, 1000)
    assert engine.trash() == []


def test_the_reserve_is_made_given_up_and_made_again(tmp_path: Path) -> None:
    assert reserve.short(tmp_path)  # none yet
    assert reserve.ensure(tmp_path) and not reserve.short(tmp_path)
    size = reserve.path(tmp_path).stat().st_size
    assert size == reserve.size_for(tmp_path) and size >= reserve.SMALLEST
    assert reserve.path(tmp_path).stat().st_blocks * 512 >= size  # allocated, not a hole
    assert reserve.release(tmp_path) and reserve.short(tmp_path)
    assert not reserve.release(tmp_path)  # nothing left to give
    assert reserve.ensure(tmp_path)


def test_a_roomy_disk_leaves_folding_to_the_checkpointer(tmp_path: Path) -> None:
    disk = os.statvfs(tmp_path)
    free = disk.f_bavail * disk.f_frsize
    if free < 4 * reserve.TIGHT_BYTES:
        pytest.skip("this disk is itself tight")
    assert reserve.fold_limit(tmp_path, wal_bytes=0) == 0
    tight = reserve.fold_limit(tmp_path, wal_bytes=free)  # a WAL as large as the free space
    assert tight == max(256, free // 8 // reserve.PAGE)


def test_the_settings_that_bound_space_are_checked(kyfs_home: Path) -> None:
    cap = config.undo_cap_bytes(kyfs_home)
    disk = os.statvfs(kyfs_home)
    assert cap == min(10240 * 2**20, int(disk.f_blocks * disk.f_frsize * 0.2))
    (kyfs_home / "config.toml").write_text("undo_cap_mib = 1\nundo_cap_percent = 50\n")
    assert config.undo_cap_bytes(kyfs_home) == 2**20
    assert config.undo_cap_bytes(None) == 2**20
    for bad in ("undo_cap_mib = -1", "undo_cap_percent = 101", 'undo_cap_mib = "x"',
                "write_buffer_mib = 0"):  # fmt: skip
        (kyfs_home / "config.toml").write_text(bad + "\n")
        with pytest.raises(InvalidInput):
            config.undo_cap_bytes(kyfs_home)
            config.write_buffer_bytes()


def test_stored_blocks_fill_the_file_pages_within_a_tenth(engine: SqliteEngine) -> None:
    """Blocks are rows of up to 32 KiB; the part of a leaf page too small for the next
    one is slack. With 1 KiB pages (connection.PAGE_SIZE) 8 MB of incompressible values
    take a compacted file within 10% of their bytes (4 KiB pages took 14% more)."""
    engine.create("w")
    with engine.using("w") as ws:
        for n in range(8):
            ws.set(f"k{n}", os.urandom(1_000_000))
        ws.compact()
        assert ws.file_size() <= 1.10 * 8_000_000
        assert len(ws.get("k7")) == 1_000_000
