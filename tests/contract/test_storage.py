"""The block store through the Workspace interface, on every engine: versions, copies and
archived values share unchanged blocks; space is accounted once per block; a damaged block
is never served; history coalesces closes of one process, thins itself, and follows a key
through a rename over it."""

from __future__ import annotations

import os
import random
import time

import pytest

from kyfs.core.blocks import MAX_BLOCK
from kyfs.core.errors import DamagedBlock
from kyfs.engine.base import Workspace
from kyfs.engine.sql.history import COALESCE_S


def text(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"token", b"config", b"kyfs"]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(8)) + f" {rng.random()}\n".encode()
    return bytes(out[:size])


def test_a_small_change_costs_only_the_blocks_around_it(ws: Workspace) -> None:
    value = os.urandom(400_000)
    entry = ws.set("big", value)
    changed = bytearray(value)
    changed[200_000] ^= 0xFF
    step = ws.block_size
    idx = 200_000 // step
    block = bytes(changed[idx * step : (idx + 1) * step])
    assert ws.commit(entry.id, size=len(value), valid=len(value), changes=[(idx, block)])
    assert ws.get("big") == bytes(changed)
    usage = ws.usage()
    assert usage.live >= len(value)  # random bytes do not compress
    assert 0 < usage.history <= 2 * MAX_BLOCK  # the old version differs in one block or two
    versions = [h for h in ws.history("big") if h.size is not None]
    assert ws.version_value(versions[0].id or 0) == value
    assert ws.version_value(versions[-1].id or 0) == bytes(changed)


def test_equal_values_are_stored_once(ws: Workspace) -> None:
    value = os.urandom(300_000)
    ws.set("a", value)
    one = ws.usage().live
    ws.set("b", value)
    ws.set("dir/c", value)
    usage = ws.usage()
    assert usage.live == one and usage.values == 3 * len(value)


def test_archive_and_history_share_the_blocks_they_hold(ws: Workspace) -> None:
    value = os.urandom(200_000)
    ws.set("k", value)
    ws.delete("k")
    usage = ws.usage()
    assert usage.live == 0 and usage.archive >= len(value) and usage.history == 0
    assert ws.purge_archive(time.time_ns() + 1) == 1
    usage = ws.usage()  # the version still holds the value: counted as history now
    assert usage.archive == 0 and usage.history >= len(value)
    assert ws.thin_history(time.time_ns() + 400 * 86400 * 10**9) >= 0
    ws.set_meta("history_versions", "0")
    ws.thin_history(time.time_ns() + 400 * 86400 * 10**9)
    assert ws.usage().history == 0  # the last reference went: so did the blocks


def test_restoring_a_version_copies_no_byte(ws: Workspace) -> None:
    first = text(150_000, seed=2)
    ws.set("doc", first)
    ws.set("doc", text(150_000, seed=3))
    stored = ws.usage()
    version = next(h for h in ws.history("doc") if h.size is not None)
    ws.restore_version("doc", version=version.id)
    assert ws.get("doc") == first
    after = ws.usage()
    assert after.live + after.history + after.archive == (
        stored.live + stored.history + stored.archive
    )


def test_a_damaged_block_is_never_served(ws: Workspace) -> None:
    value = os.urandom(100_000)
    ws.set("victim", value)
    ws.set("bystander", b"fine")
    victim = ws.stat("victim").id
    conn = ws._conn  # type: ignore[attr-defined]  # the engine's own connection
    block_id, data = conn.execute(
        "SELECT b.id, b.data FROM extents e JOIN blocks b ON b.id = e.block"
        " WHERE e.owner = ? ORDER BY e.pos LIMIT 1",
        (victim,),
    ).fetchone()
    damaged = bytearray(bytes(data))
    damaged[len(damaged) // 2] ^= 0x01
    conn.execute("UPDATE blocks SET data = ? WHERE id = ?", (bytes(damaged), block_id))
    with pytest.raises(DamagedBlock):
        ws.get("victim")
    with pytest.raises(DamagedBlock):
        ws.read(victim, 0, 4096)
    assert ws.get("bystander") == b"fine"
    problems = ws.check()
    assert any("damaged blocks" in p and "victim" in p for p in problems)


def test_closes_of_one_process_coalesce_into_one_version(ws: Workspace) -> None:
    entry = ws.create("log")
    for n in range(5):  # echo >> log five times from one shell: one version
        value = ws.get("log") + f"line {n}\n".encode()
        ws.commit(entry.id, size=len(value), valid=0, changes=[(0, value)], pid=4242)
    kept = [h for h in ws.history("log") if h.size is not None]
    assert len(kept) == 1 and ws.version_value(kept[0].id or 0) == ws.get("log")
    for n, pid in enumerate((1, 2, 3)):  # three processes: three versions
        value = ws.get("log") + f"other {n}\n".encode()
        ws.commit(entry.id, size=len(value), valid=0, changes=[(0, value)], pid=pid)
    assert len([h for h in ws.history("log") if h.size is not None]) == 4
    time.sleep(COALESCE_S + 0.1)  # a close after a pause starts a new version
    value = ws.get("log") + b"later\n"
    ws.commit(entry.id, size=len(value), valid=0, changes=[(0, value)], pid=3)
    assert len([h for h in ws.history("log") if h.size is not None]) == 5


def test_a_rename_over_a_key_is_a_version_of_it(ws: Workspace) -> None:
    ws.set("conf", b"old settings\n")
    ws.set("conf.tmp", b"new settings\n")  # an editor's or sed -i's temporary file
    ws.rename("conf.tmp", "conf")
    versions = [h for h in ws.history("conf") if h.size is not None]
    assert [ws.version_value(h.id or 0) for h in versions] == [
        b"old settings\n", b"new settings\n",
    ]  # fmt: skip
    assert versions[-1].action == "rename" and versions[-1].detail == "from conf.tmp"
    ws.restore_version("conf", version=versions[0].id)
    assert ws.get("conf") == b"old settings\n"
    ws.restore_version("conf", version=versions[-1].id)
    assert ws.get("conf") == b"new settings\n"


def test_history_thins_itself_and_keeps_the_newest(ws: Workspace) -> None:
    for n in range(30):
        ws.set("k", f"v{n}".encode())
    now = time.time_ns()
    assert ws.thin_history(now) == 0  # everything of the last hour stays
    ws.set_meta("history_versions", "4")
    dropped = ws.thin_history(now + 40 * 86400 * 10**9)  # 40 days later
    kept = [h for h in ws.history("k") if h.size is not None]
    assert dropped >= 26 and [ws.version_value(h.id or 0) for h in kept][-4:] == [
        b"v26", b"v27", b"v28", b"v29",
    ]  # fmt: skip


def test_a_coalesced_version_is_a_change_every_watcher_sees(ws: Workspace, peer: object) -> None:
    """The row that replaces a coalesced version has a new id past every cursor, so
    another daemon's watcher (Workspace.changes) is told of the write."""
    entry = ws.create("log")
    ws.commit(entry.id, size=3, valid=0, changes=[(0, b"one")], pid=77)
    with peer.using("w") as other:  # type: ignore[attr-defined]
        cursor, _ = other.changes(None)
        ws.commit(entry.id, size=3, valid=0, changes=[(0, b"two")], pid=77)  # coalesces
        cursor, changed = other.changes(cursor)
        assert changed == ["log"]
        assert len([h for h in ws.history("log") if h.size is not None]) == 1


def test_a_version_shares_its_node_until_the_value_changes(ws: Workspace) -> None:
    """A value written once costs its version a row: no extents of its own, no history
    bytes; when the value changes, or the node leaves the archive for good, the version
    keeps what it had."""
    first = text(120_000, seed=5)
    entry = ws.set("doc", first)
    conn = ws._conn  # type: ignore[attr-defined]
    version = next(h for h in ws.history("doc") if h.size is not None)
    owned = "SELECT count(*) FROM extents WHERE owner = ?"
    assert conn.execute(owned, (-(version.id or 0),)).fetchone()[0] == 0  # shares the node's
    assert ws.usage().history == 0
    changed = bytearray(first)
    changed[:5] = b"NEW!!"
    ws.commit(
        entry.id,
        size=len(changed),
        valid=len(changed),
        changes=[(0, bytes(changed[: ws.block_size]))],
    )
    assert ws.version_value(version.id or 0) == first  # it kept the old value
    assert conn.execute(owned, (-(version.id or 0),)).fetchone()[0] > 0
    assert 0 < ws.usage().history <= 2 * MAX_BLOCK  # only the block that differs
    ws.set("gone", b"short-lived value")
    kept = next(h for h in ws.history("gone") if h.size is not None)
    ws.delete("gone")
    assert ws.version_value(kept.id or 0) == b"short-lived value"  # the archive holds it
    ws.purge_archive(time.time_ns() + 1)
    assert ws.version_value(kept.id or 0) == b"short-lived value"  # and now the version
    assert ws.check() == []


def test_a_deleted_key_keeps_no_versions_past_the_days(ws: Workspace) -> None:
    """The newest versions kept whatever their age are those of keys that exist: a
    deleted key's history thins out by time alone."""
    for n in range(3):
        ws.set("kept", f"k{n}".encode())
        ws.set("gone", f"g{n}".encode())
    ws.delete("gone")
    ws.thin_history(time.time_ns() + 40 * 86400 * 10**9)  # 40 days later
    assert len([h for h in ws.history("kept") if h.size is not None]) == 3
    assert [h for h in ws.history("gone") if h.size is not None] == []


def test_holes_free_their_blocks_and_read_as_zeros(ws: Workspace) -> None:
    value = os.urandom(600_000)
    entry = ws.set("f", value)
    before = ws.usage().live
    expected = bytearray(value)
    rng = random.Random(7)
    holes = [(0, 1), (100_000, 300_000), (300_001, 300_002), (450_123, 450_500), (599_990, 700_000)]
    for _ in range(4):  # ranges whose edges fall anywhere, inside one block or across many
        lo = rng.randrange(len(value))
        holes.append((lo, lo + rng.randrange(1, 40_000)))
    for lo, hi in holes:
        expected[lo:hi] = bytes(len(expected[lo:hi]))
    assert ws.commit(entry.id, size=len(value), valid=len(value), changes=(), holes=holes)
    assert ws.get("f") == bytes(expected)
    assert ws.read(entry.id, 150_000, 10) == bytes(10)
    assert ws.usage().live <= before - 200_000  # the 200,000-byte hole costs no block
    assert ws.check() == []  # no extent over another, none past the size
    versions = [h for h in ws.history("f") if h.size is not None]
    assert ws.version_value(versions[0].id or 0) == value  # the version before keeps it


def test_a_hole_applies_after_the_buffered_changes_in_one_commit(ws: Workspace) -> None:
    value = os.urandom(200_000)
    entry = ws.set("f", value)
    step = ws.block_size
    block = os.urandom(step)
    expected = bytearray(value) + bytes(50_000)
    expected[step : 2 * step] = block
    expected[step + 100 : 2 * step - 100] = bytes(step - 200)  # the hole over the change
    assert ws.commit(
        entry.id, size=250_000, valid=len(value), changes=[(1, block)],
        holes=[(step + 100, 2 * step - 100), (240_000, 999_999)],
    )  # fmt: skip
    assert ws.get("f") == bytes(expected)
    assert ws.stat("f").size == 250_000


def test_stored_bytes_follow_every_change_of_a_value(ws: Workspace) -> None:
    """Entry.stored (st_blocks) is the bytes of the value's blocks, whatever changes them:
    a hole costs nothing; fsck's count from the extents agrees after each step."""
    value = os.urandom(300_000)
    entry = ws.set("f", value)
    assert ws.stat("f").stored == len(value)
    assert ws.commit(entry.id, size=1 << 30, valid=len(value), changes=())  # truncate -s 1G
    assert ws.stat("f").stored == len(value) and ws.stat("f").size == 1 << 30
    assert ws.commit(entry.id, size=1 << 30, valid=1 << 30, changes=(), holes=[(0, 100_000)])
    assert ws.stat("f").stored == len(value) - 100_000
    step = ws.block_size
    assert ws.commit(entry.id, size=1 << 30, valid=1 << 30, changes=[(1000, bytes(step))])
    assert ws.stat("f").stored == len(value) - 100_000 + step  # written zeros are stored
    assert ws.check() == []
    versions = [h for h in ws.history("f") if h.size is not None]
    ws.restore_version("f", versions[0].id)
    assert ws.stat("f").stored == len(value)
    ws.delete("f")
    assert ws.restore("f").key == "f"
    assert ws.stat("f").stored == len(value)
    ws.truncate("f", 10)
    assert ws.stat("f").stored == 10
    assert ws.stat("").stored == 0  # a directory stores no value
    assert ws.check() == []
