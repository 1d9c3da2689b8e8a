"""The MCP server (kyfs mcp, kyfs.mcp_server) driven by the official SDK's own client:
in process, over stdio (a real ``python -m kyfs mcp`` subprocess) and over streamable
HTTP (a real ``kyfs mcp --http PORT`` with its bearer token), and resource-updated
events for writes made elsewhere."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

import kyfs
from kyfs.mcp_server import KyfsMcp, load_token, resource_uri
from tests.conftest import Mount

CONNECT_TIMEOUT = 20.0  # seconds for a subprocess server to answer


def structured(result: CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None, result
    return result.structured_content


async def round_trip(client: Client, workspace: str) -> None:
    """What every transport must do: set, get, search, compare-and-swap, restore, and a
    missing key as a tool error."""
    tools = {tool.name for tool in (await client.list_tools()).tools}
    assert {"get", "set", "delete", "list", "search", "history", "restore", "log"} <= tools
    assert {"snapshot", "fork", "diff"} <= tools

    stored = structured(await client.call_tool("set", {"key": "user.name", "value": "Alice"}))
    assert stored["workspace"] == workspace and stored["size"] == 5
    got = structured(await client.call_tool("get", {"key": "user.name"}))
    assert got["value"] == "Alice" and got["version"] == stored["version"]
    await client.call_tool("set", {"key": "notes/a", "value": "the quick brown fox"})
    listed = structured(await client.call_tool("list", {"prefix": "notes/"}))
    assert listed["keys"] == ["notes/a"]
    hits = structured(await client.call_tool("search", {"query": "brown", "fts": True}))["hits"]
    assert [hit["key"] for hit in hits] == ["notes/a"]

    # compare-and-swap: the version moved on
    newer = structured(
        await client.call_tool(
            "set", {"key": "user.name", "value": "Bob", "if_version": stored["version"]}
        )
    )
    stale = await client.call_tool(
        "set", {"key": "user.name", "value": "Carol", "if_version": stored["version"]}
    )
    assert stale.is_error
    assert structured(stale)["error"] == "VersionConflict"
    assert structured(stale)["exit_code"] == 7
    absent = await client.call_tool("set", {"key": "user.name", "value": "X", "if_absent": True})
    assert absent.is_error and structured(absent)["error"] == "KeyExists"
    assert "Traceback" not in absent.content[0].text  # type: ignore[union-attr]

    # restore: an older version, then a deleted key from the archive
    back = await client.call_tool("restore", {"key": "user.name", "version": stored["version"]})
    assert not back.is_error, back
    assert structured(await client.call_tool("get", {"key": "user.name"}))["value"] == "Alice"
    history = structured(await client.call_tool("history", {"key": "user.name"}))["history"]
    assert newer["version"] in [row["version"] for row in history]
    await client.call_tool("delete", {"key": "user.name"})
    missing = await client.call_tool("get", {"key": "user.name"})
    assert missing.is_error
    error = structured(missing)
    assert error["error"] == "KeyNotFound" and error["exit_code"] == 1 and error["errno"] == 2
    assert missing.content[0].text.startswith("KeyNotFound: ")  # type: ignore[union-attr]
    assert not (await client.call_tool("restore", {"key": "user.name"})).is_error
    assert structured(await client.call_tool("get", {"key": "user.name"}))["value"] == "Alice"

    # the resource, and the log says who
    read = await client.read_resource(resource_uri(workspace, "notes/a"))
    assert read.contents[0].text == "the quick brown fox"  # type: ignore[union-attr]
    changes = structured(await client.call_tool("log", {"prefix": "user."}))["changes"]
    assert {c["source"] for c in changes} == {"mcp"}

    # snapshots, forks and diffs
    taken = structured(await client.call_tool("snapshot", {"name": "s1"}))
    assert taken["snapshot"] == "s1" and taken["keys"] >= 2
    await client.call_tool("set", {"key": "notes/a", "value": "changed"})
    changed = structured(await client.call_tool("diff", {"old": "@s1"}))["changes"]
    assert [(c["key"], c["status"]) for c in changed] == [("notes/a", "changed")]
    fork = f"{workspace}-fork"
    made = structured(await client.call_tool("fork", {"new": fork, "snapshot": "s1"}))
    assert made["fork"] == fork
    old = structured(await client.call_tool("get", {"key": "notes/a", "workspace": fork}))
    assert old["value"] == "the quick brown fox"
    back = structured(await client.call_tool("snapshot", {"action": "restore", "name": "s1"}))
    assert back["changed"] == 1
    assert structured(await client.call_tool("get", {"key": "notes/a"}))["value"] == (
        "the quick brown fox"
    )
    listed = structured(await client.call_tool("snapshot", {"action": "list"}))["snapshots"]
    assert [item["name"] for item in listed] == ["s1"]
    gone = await client.call_tool("snapshot", {"action": "delete", "name": "nosuch"})
    assert gone.is_error and structured(gone)["error"] == "SnapshotNotFound"


def run(main: Callable[[], Awaitable[None]]) -> None:
    anyio.run(main)


@pytest.fixture
def as_mcp() -> Iterator[None]:
    """Changes of this process recorded as ``kyfs mcp`` records them (source mcp)."""
    from kyfs.core import actor

    before = actor.setting()
    actor.set_actor(actor.Actor("mcp", "tester"))
    yield
    actor.set_actor(before)


@pytest.mark.usefixtures("both_engines", "as_mcp")
def test_in_process() -> None:
    async def main() -> None:
        async with Client(KyfsMcp("alpha").server) as client:
            created = await client.call_tool("get", {"key": "x", "workspace": "nope"})
            assert created.is_error and structured(created)["error"] == "WorkspaceNotFound"
            with kyfs.open("alpha", create=True):
                pass
            await round_trip(client, "alpha")
            await client.call_tool("set", {"key": "oncall/pager", "value": "pager rotation"})
            await client.call_tool("set", {"key": "b", "value": "//4=", "base64_value": True})
            blob = structured(await client.call_tool("get", {"key": "b"}))
            assert (blob["value"], blob["encoding"]) == ("//4=", "base64")
            hits = await client.call_tool(
                "search", {"query": "pager rotation schedule", "semantic": True, "limit": 1}
            )
            assert [hit["key"] for hit in structured(hits)["hits"]] == ["oncall/pager"]

    run(main)


@pytest.mark.parametrize("watch", [True, False])
@pytest.mark.usefixtures("both_engines")
def test_an_api_write_reaches_a_listening_client(watch: bool) -> None:
    """A write through the Python API (not through the server) is told to a client
    listening to its resource within 1 s; without the watcher it is not (the test can
    fail)."""
    with kyfs.open("alpha", create=True) as ws:
        ws.set("k", "0")
    uri = resource_uri("alpha", "k")

    async def main() -> bool:
        async with (
            Client(KyfsMcp("alpha", watch=watch).server) as client,
            client.listen(resource_subscriptions=[uri]) as subscription,
        ):
            with kyfs.open("alpha") as ws:
                ws.set("other", "x")
                ws.set("k", "1")
            with anyio.move_on_after(1.0):
                async for event in subscription:
                    assert getattr(event, "uri", None) == uri  # only what it listens to
                    return True
            return False

    assert anyio.run(main) is watch


def _kyfs_env(home: Path) -> dict[str, str]:
    return {**os.environ, "KYFS_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def test_stdio(kyfs_home: Path) -> None:
    with kyfs.open("alpha", create=True):
        pass
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "kyfs", "mcp", "-w", "alpha"], env=_kyfs_env(kyfs_home)
    )

    async def main() -> None:
        with anyio.fail_after(CONNECT_TIMEOUT):
            async with Client(params) as client:
                await round_trip(client, "alpha")

    run(main)


def test_identity_is_the_servers(kyfs_home: Path) -> None:
    """``kyfs --user agent1 mcp`` writes as agent1: its own workspace, recorded as its."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "kyfs", "--user", "agent1", "mcp"],
        env=_kyfs_env(kyfs_home),
    )

    async def main() -> None:
        with anyio.fail_after(CONNECT_TIMEOUT):
            async with Client(params) as client:
                stored = await client.call_tool("set", {"key": "k", "value": "v"})
                assert not stored.is_error, stored
                changes = structured(await client.call_tool("log", {}))["changes"]
                assert [(c["source"], c["user"]) for c in changes] == [("mcp", "agent1")]

    run(main)
    with kyfs.open("default", create=True) as mine:
        assert "k" not in mine.keys()  # not the default identity's workspace


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def http_server(kyfs_home: Path) -> Iterator[tuple[str, str]]:
    """A ``kyfs mcp --http PORT`` subprocess: (its URL, its token); killed in teardown."""
    with kyfs.open("alpha", create=True):
        pass
    port = _free_port()
    log = kyfs_home / "mcp-http.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kyfs", "mcp", "-w", "alpha", "--http", str(port)],
            env=_kyfs_env(kyfs_home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        token_file = kyfs_home / "state" / "mcp-token"
        assert str(token_file) in log.read_text()
        assert token_file.stat().st_mode & 0o777 == 0o600
        yield f"http://127.0.0.1:{port}/mcp", load_token(token_file)
    finally:
        process.kill()
        process.wait(timeout=10)


def test_http_with_token(http_server: tuple[str, str]) -> None:
    url, token = http_server
    refused = httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert refused.status_code == 401
    wrong = httpx2.post(url, json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401

    async def main() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with anyio.fail_after(CONNECT_TIMEOUT):
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                await round_trip(client, "alpha")
                uri = resource_uri("alpha", "watched")
                async with client.listen(resource_subscriptions=[uri]) as subscription:
                    with kyfs.open("alpha") as ws:  # another process than the server
                        ws.set("watched", "1")
                    with anyio.fail_after(1.0):
                        event = await subscription.__anext__()
                    assert getattr(event, "uri", None) == uri

    run(main)


def test_token_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "state" / "mcp-token"
    token = load_token(path)
    assert len(token) >= 40 and path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    assert load_token(path) == token and path.stat().st_mode & 0o777 == 0o600


def test_a_cli_write_reaches_a_listening_client(kyfs_home: Path) -> None:
    """A write made by the CLI (another process) reaches a client listening to that
    key's resource within 1 s, over stdio."""
    with kyfs.open("alpha", create=True) as ws:
        ws.set("watched", "0")
    env = _kyfs_env(kyfs_home)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "kyfs", "mcp", "-w", "alpha"], env=env
    )
    uri = resource_uri("alpha", "watched")
    delays: list[float] = []

    async def main() -> None:
        with anyio.fail_after(CONNECT_TIMEOUT):
            async with (
                Client(params) as client,
                client.listen(resource_subscriptions=[uri]) as subscription,
            ):
                for value in ("1", "2"):
                    await anyio.to_thread.run_sync(
                        lambda v=value: subprocess.run(
                            [sys.executable, "-m", "kyfs", "set", "watched", v, "-w", "alpha"],
                            env=env,
                            check=True,
                            capture_output=True,
                        )
                    )
                    written = time.monotonic()
                    with anyio.fail_after(1.0):
                        async for event in subscription:
                            if getattr(event, "uri", None) == uri:
                                break
                    delays.append(time.monotonic() - written)
                    got = await client.read_resource(uri)
                    assert got.contents[0].text == value  # type: ignore[union-attr]

    run(main)
    print(json.dumps({"resource_updated_delay_s": delays}))
    assert max(delays) < 1.0


@pytest.mark.mount
def test_a_mount_write_reaches_a_listening_client(mounted: Mount) -> None:
    """A file written through the mount (another process: sh) is told to a client
    listening to its key's resource within 1 s of the write's end."""
    uri = resource_uri("default", "from-mount")
    delays: list[float] = []

    async def main() -> None:
        async with (
            Client(KyfsMcp("default").server) as client,
            client.listen(resource_subscriptions=[uri]) as subscription,
        ):
            await anyio.to_thread.run_sync(
                lambda: subprocess.run(
                    ["sh", "-c", "echo hi > from-mount"],
                    cwd=mounted.path / "default",
                    check=True,
                )
            )
            written = time.monotonic()
            with anyio.fail_after(1.0):
                event = await subscription.__anext__()
            delays.append(time.monotonic() - written)
            assert getattr(event, "uri", None) == uri
            got = await client.read_resource(uri)
            assert got.contents[0].text == "hi\n"  # type: ignore[union-attr]

    run(main)
    print(json.dumps({"mount_write_to_resource_updated_s": delays}))


def test_a_port_in_use_is_a_clear_error() -> None:
    from click.testing import CliRunner

    from kyfs.cli import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["mcp", "--http", str(port)])
    assert result.exit_code == 3, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output
