"""The Python API (kyfs.api, docs/api.md): what a script gets from ``kyfs.open``, on
both engines, and that it acts as the identity the CLI would."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner, Result

import kyfs
from kyfs.api import Stored, Versioned
from kyfs.cli import cli
from kyfs.core.errors import (
    InvalidInput,
    InvalidQuery,
    KeyNotFound,
    ReadOnly,
    VersionConflict,
    WorkspaceNotFound,
)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.mark.usefixtures("both_engines")
def test_a_script_round_trip() -> None:
    with kyfs.open("notes", create=True) as ws:
        assert ws.name == "notes"
        stored = ws.set("user.name", "Alice")
        assert isinstance(stored, Stored) and stored.size == 5 and stored.expires_ns is None
        assert ws.set("blob", io.BytesIO(b"\x00" * 100_000), ttl=60).expires_ns is not None
        assert ws.get("user.name") == b"Alice"
        assert b"".join(ws.stream("blob")) == b"\x00" * 100_000
        assert ws.get_versioned("user.name") == Versioned(b"Alice", stored.version)
        assert ws.version("user.name") == stored.version == ws.history("user.name")[-1].id
        assert ws.stat("user.name").size == 5
        assert ws.keys() == ["blob", "user.name"]
        assert ws.keys(glob="user.*") == ["user.name"]
        assert [hit.key for hit in ws.search("alice")] == ["user.name"]
        with pytest.raises(InvalidQuery):
            ws.search("", raw=True)
        newer = ws.set("user.name", "Bob", if_version=stored.version)
        with pytest.raises(VersionConflict):
            ws.set("user.name", "Carol", if_version=stored.version)
        assert ws.version_value(stored.version) == b"Alice"
        ws.delete("user.name")
        with pytest.raises(KeyNotFound):
            ws.get("user.name")
        assert [h.action for h in ws.history("user.name")] == ["set", "set", "delete"]
        assert newer.version < ws.history("user.name")[-1].id
    # the CLI sees what the script wrote
    assert run("get", "blob", "-w", "notes").exit_code == 0
    assert run("keys", "-w", "notes").output == "blob\n"


def test_open_choose_and_close() -> None:
    with pytest.raises(WorkspaceNotFound):
        kyfs.open("missing")
    with kyfs.open() as ws:  # default is created on first use, as by the CLI
        assert ws.name == "default"
    assert run("use", "other", "--create").exit_code == 0
    ws = kyfs.open()
    assert ws.name == "other"
    assert run("use", "default").exit_code == 0
    ws.set("k", "v")  # bound at open: still other
    assert run("get", "k", "-w", "other").output == "v"
    ws.close()
    ws.close()  # twice is fine
    with pytest.raises(InvalidInput, match="closed"):
        ws.get("k")
    assert "closed" in repr(ws)


@pytest.mark.usefixtures("both_engines")
def test_a_dropped_workspace_is_noticed_at_the_next_call() -> None:
    with kyfs.open("gone", create=True) as ws:
        ws.set("k", "v")
        assert run("drop", "gone", "--yes").exit_code == 0  # not kept waiting by the object
        with pytest.raises(WorkspaceNotFound):
            ws.get("k")


@pytest.mark.usefixtures("both_engines")
def test_the_identity_is_the_clis(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("--user", "alice", "create", "private").exit_code == 0
    assert run("--user", "alice", "create", "ro").exit_code == 0
    assert run("--user", "alice", "set", "secret", "s", "-w", "ro").exit_code == 0
    assert run("--user", "alice", "share", "ro", "--with", "bob", "--read-only").exit_code == 0
    monkeypatch.setenv("KYFS_USER", "bob")
    for name in ("private", "alice~private"):
        with pytest.raises(WorkspaceNotFound):
            kyfs.open(name)
    with kyfs.open("alice~ro") as ws:
        assert ws.get("secret") == b"s"
        with pytest.raises(ReadOnly):
            ws.set("secret", "overwritten")
        with pytest.raises(ReadOnly):
            ws.delete("secret")
    monkeypatch.setenv("KYFS_USER", "alice")
    with kyfs.open("ro") as ws:
        assert ws.get("secret") == b"s"


@pytest.mark.usefixtures("both_engines")
def test_semantic_search_and_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Semantic search (the real default model, offline) and contextd's collections
    through the API, on both engines."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with kyfs.open("notes", create=True) as ws:
        ws.set("oncall/pager", "The pager rotation changes every Monday at ten.")
        ws.set("food/lunch", "Pizza arrives on Fridays at noon in the kitchen.")
        with pytest.raises(InvalidInput):
            ws.search("pager", semantic=True, fts=True)
        assert ws.search("pager rotation schedule", semantic=True, limit=1)[0].key == "oncall/pager"
        assert [hit.key for hit in ws.search("pizza", fts=True)] == ["food/lunch"]
        ws.create_collection("docs", 3)
        assert (
            ws.add(
                "docs", [("a", [1, 0, 0], {"lang": "en"}, "hello"), ("b", [0, 1, 0], None, None)]
            )
            == 2
        )
        assert [c.name for c in ws.collections()] == ["docs"]
        (best,) = ws.query("docs", [1, 0.1, 0], limit=1)
        assert (best.name, best.metadata, best.document) == ("a", {"lang": "en"}, "hello")
        assert [i.name for i in ws.query("docs", [1, 0, 0], where={"lang": "en"})] == ["a"]
        assert ws.remove("docs", ["a", "nope"]) == 1
        assert ws.drop_collection("docs") == 1
        with pytest.raises(KeyNotFound):
            ws.query("docs", [1, 0, 0])
