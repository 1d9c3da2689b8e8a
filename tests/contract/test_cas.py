"""Compare-and-swap and versions (Workspace.compare_and_set, current_version,
get_versioned) on every engine: a version is the id of the key's newest history row,
it moves with every write of the value and only then, and it never falls back."""

from __future__ import annotations

import pytest

from kyfs.core.errors import (
    InvalidInput,
    IsADirectory,
    KeyExists,
    KeyNotFound,
    VersionConflict,
)
from kyfs.engine.base import Engine, Workspace


def test_if_absent_creates_once(ws: Workspace) -> None:
    entry, version = ws.compare_and_set("k", b"first", if_absent=True)
    assert entry.size == 5
    assert version == ws.current_version("k") == ws.history("k")[-1].id
    with pytest.raises(KeyExists) as lost:
        ws.compare_and_set("k", b"second", if_absent=True)
    assert lost.value.exit_code == 7
    assert ws.get_versioned("k") == (b"first", version)
    ws.mkdir("d")
    with pytest.raises(KeyExists):
        ws.compare_and_set("d", b"x", if_absent=True)


def test_if_version_wins_only_at_that_version(ws: Workspace) -> None:
    _, first = ws.compare_and_set("k", b"1")
    _, second = ws.compare_and_set("k", b"2", if_version=first)
    assert second > first
    rows = len(ws.history("k"))
    with pytest.raises(VersionConflict) as lost:
        ws.compare_and_set("k", b"3", if_version=first)
    assert lost.value.exit_code == 7
    assert ws.get_versioned("k") == (b"2", second)
    assert len(ws.history("k")) == rows  # nothing written, not even history


def test_every_value_write_moves_the_version_and_nothing_else_does(ws: Workspace) -> None:
    entry = ws.set("k", b"one")
    seen = [ws.current_version("k")]
    ws.chmod("k", 0o600)
    ws.set_ttl("k", 3600)
    assert ws.current_version("k") == seen[-1]  # mode and TTL are not the value
    ws.commit(entry.id, size=3, valid=3, changes=[(0, b"two")])  # a write through the mount
    seen.append(ws.current_version("k"))
    ws.restore_version("k", seen[0])
    seen.append(ws.current_version("k"))
    ws.set("other", b"three")
    ws.rename("other", "k")
    seen.append(ws.current_version("k"))
    assert seen == sorted(set(seen)), seen
    assert ws.get_versioned("k") == (b"three", seen[-1])


def test_keys_without_history_are_version_zero(ws: Workspace) -> None:
    ws.create("empty")
    assert ws.current_version("empty") == 0
    _, version = ws.compare_and_set("empty", b"now", if_version=0)
    assert version > 0
    with pytest.raises(VersionConflict):
        ws.compare_and_set("empty", b"again", if_version=0)


def test_gone_keys_and_bad_input(ws: Workspace) -> None:
    _, version = ws.compare_and_set("k", b"v")
    ws.delete("k")
    with pytest.raises(KeyNotFound):
        ws.current_version("k")
    with pytest.raises(KeyNotFound):
        ws.get_versioned("k")
    with pytest.raises(VersionConflict, match="gone"):
        ws.compare_and_set("k", b"w", if_version=version)
    ws.mkdir("d")
    with pytest.raises(IsADirectory):
        ws.current_version("d")
    with pytest.raises(InvalidInput):
        ws.compare_and_set("k", b"w", if_version=1, if_absent=True)
    with pytest.raises(InvalidInput):
        ws.compare_and_set("k", b"w", if_version=-1)


def test_releasing_undo_data_keeps_the_current_version(ws: Workspace) -> None:
    """A released or thinned history never hands a key an older version back: a
    compare-and-swap that read it would then pass over a newer write."""
    _, old = ws.compare_and_set("k", b"1")
    _, current = ws.compare_and_set("k", b"2")
    ws.set("gone", b"x")
    ws.delete("gone")
    ws.release_undo()
    assert ws.current_version("k") == current
    with pytest.raises(VersionConflict):
        ws.compare_and_set("k", b"3", if_version=old)
    for setting in ("versions", "all_hours", "hourly_hours", "days"):
        ws.set_meta(f"history_{setting}", "0")
    ws.thin_history(2**62)
    assert [h.id for h in ws.history("k")] == [current]
    assert ws.history("gone") == []  # a deleted key's rows still go
    _, newer = ws.compare_and_set("k", b"3", if_version=current)
    assert newer > current


def test_a_peer_write_between_read_and_swap_loses_the_swap(
    engine: Engine, peer: Engine, ws: Workspace
) -> None:
    ws.set("k", b"0")
    value, version = ws.get_versioned("k")
    with peer.using("w") as other:
        assert other.current_version("k") == version
        other.compare_and_set("k", b"peer", if_version=version)
    with pytest.raises(VersionConflict):
        ws.compare_and_set("k", value + b"1", if_version=version)
    assert ws.get("k") == b"peer"
