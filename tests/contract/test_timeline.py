"""The timeline on every engine (issue 29 items 3 and 4): each change's history row says
who made it (kyfs.core.actor), Workspace.timeline selects by id, time and key prefix,
kyfs.timeline.watch streams another engine's commits (another process, another daemon),
and a copy to the other engine keeps who made each change."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from kyfs import timeline
from kyfs.core import actor
from kyfs.core.actor import Actor
from kyfs.engine.base import Engine, Workspace


@pytest.fixture(autouse=True)
def _actor() -> Iterator[None]:
    actor.set_actor(Actor("api", "alice"))
    yield
    actor.set_actor(actor.UNKNOWN)


def test_each_change_records_who(ws: Workspace) -> None:
    ws.set("notes/a", b"one")
    actor.set_actor(lambda: Actor("mount", "bob", 4242, "vim"))
    ws.rename("notes/a", "other/b")
    actor.set_actor(Actor("cli", "carol"))
    ws.delete("other/b")
    changes = ws.timeline()
    assert [(c.action, c.key, c.source, c.user, c.pid, c.comm) for c in changes] == [
        ("set", "notes/a", "api", "alice", None, None),
        ("rename", "notes/a", "mount", "bob", 4242, "vim"),
        ("rename", "other/b", "mount", "bob", 4242, "vim"),
        ("delete", "other/b", "cli", "carol", None, None),
    ]
    assert changes[0].size == 3 and changes[-1].size is None
    assert [c.id for c in changes] == sorted(c.id for c in changes)
    # a prefix selects a rename by either name; after and since_ns cut the start
    assert [c.key for c in ws.timeline(prefix="notes/")] == ["notes/a", "notes/a", "other/b"]
    assert [c.key for c in ws.timeline(prefix="other/")] == ["notes/a", "other/b", "other/b"]
    assert ws.timeline(changes[1].id) == changes[2:]
    assert ws.timeline(since_ns=changes[3].time_ns) == changes[3:]
    assert ws.timeline(limit=2) == changes[:2]
    assert timeline.log([("w", ws)], prefix="notes/a") == [("w", c) for c in changes[:3]]


def test_watch_sees_another_engines_commits(engine: Engine, peer: Engine) -> None:
    engine.create("w")
    with peer.using("w") as other:
        other.set("before", b"not shown: committed before the watch began")
    stop = threading.Event()
    seen: list[tuple[str, str, str | None]] = []

    def writer() -> None:
        time.sleep(0.3)
        with peer.using("w") as other:
            other.set("logs/one", b"1")
            other.set("elsewhere", b"2")  # not under the prefix
            other.set("logs/two", b"22")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for name, change in timeline.watch(engine, ["w"], prefix="logs/", stop=stop):
            seen.append((name, change.key, change.source))
            if len(seen) == 2:
                break
    finally:
        thread.join()
    assert seen == [("w", "logs/one", "api"), ("w", "logs/two", "api")]


def test_copy_keeps_who(engine: Engine, peer: Engine, tmp_path: object) -> None:
    from kyfs.engine.sql import copy as copying
    from kyfs.engine.sqlite.engine import SqliteEngine

    engine.create("w")
    with engine.using("w") as source:
        source.set("a", b"1")
        actor.set_actor(lambda: Actor("mount", "bob", 7, "cp"))
        source.delete("a")
        target_engine = SqliteEngine(tmp_path / "copy")  # type: ignore[operator]
        try:
            target_engine.create("c")
            with target_engine.using("c") as target:
                copying.copy_workspace(source, target)  # type: ignore[arg-type]
                assert target.timeline() == source.timeline()
                assert (
                    copying.differences(copying.fingerprint(source), copying.fingerprint(target))
                    == []
                )
        finally:
            target_engine.close()
