"""The MCP server (``kyfs mcp``): kyfs workspaces as tools and resources for an agent,
over stdio or streamable HTTP, built on the official ``mcp`` Python SDK (MCPServer).

Tools (each takes ``workspace``: None is the one the server was started for, else the
active one, as the CLI chooses): get, set (with ``if_version`` / ``if_absent``:
compare-and-swap), delete, list, search (``semantic``, ``fts``), history, restore, log.
Each answers structured content (a JSON object) and the same as JSON text. A
kyfs.core.errors.KyfsError becomes a tool error (``isError``) whose text is
``ClassName: message`` and whose structured content holds ``error`` (the class name),
``message``, ``exit_code`` and ``errno`` (docs/exit-codes.md): never a traceback.

Resources: the value of key K of workspace W is ``kyfs://W/K`` (the template
``kyfs://{workspace}/{+key}``: text when it is UTF-8, else a blob). Changes reach
clients as ``notifications/resources/updated`` on their ``subscriptions/listen`` stream
(the SDK's 2026-07-28 protocol; the older ``resources/subscribe`` is not served): a
thread follows the timeline of every workspace the identity sees (kyfs.timeline.watch:
polling on SQLite, LISTEN/NOTIFY on PostgreSQL), so writes from the CLI, the mount, the
API, other servers and this one are told alike.

Every call acts as the identity of the process (``kyfs --user NAME mcp``, ``$KYFS_USER``:
kyfs.app.engine_session) and is recorded with source ``mcp`` (kyfs.core.actor; set by
the command).

Thread-safety: the tools run on the server's event loop thread, one at a time (the
workspaces they keep open are used from that thread only); the watcher has its own
engine in its own thread and hands events to the loop (anyio.from_thread).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.shared.uri_template import UriTemplate
from mcp.types import CallToolResult, TextContent

from kyfs import api, timeline
from kyfs.core.errors import InvalidInput, KyfsError, NotFound

RESOURCE_TEMPLATE = "kyfs://{workspace}/{+key}"
TOKEN_FILE = "mcp-token"  # in the state directory (kyfs.platform.paths.state_dir)
WATCH_POLL_S = 0.05  # seconds between two polls of the timeline (SQLite)
READY_S = 10.0  # seconds the server waits at start for the watcher to take its cursors
HTTP_PATH = "/mcp"

log = logging.getLogger(__name__)
_TEMPLATE = UriTemplate.parse(RESOURCE_TEMPLATE)


def resource_uri(workspace: str, key: str) -> str:
    """The resource URI of ``key`` in ``workspace``: ``kyfs://WORKSPACE/KEY``, characters
    outside URIs percent-encoded (a ``/`` of a key stays)."""
    return _TEMPLATE.expand({"workspace": workspace, "key": key})


def error_result(error: KyfsError) -> CallToolResult:
    """``error`` as an MCP tool error: text ``ClassName: message``; structured content
    ``{"error", "message", "exit_code", "errno"}``."""
    name = type(error).__name__
    detail = {"error": name, "message": str(error), "exit_code": error.exit_code}
    detail["errno"] = error.errno
    return CallToolResult(
        content=[TextContent(type="text", text=f"{name}: {error}")],
        structured_content=detail,
        is_error=True,
    )


def _ok(result: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(result, ensure_ascii=False))],
        structured_content=result,
    )


def _value_fields(data: bytes) -> dict[str, Any]:
    """A value for JSON: ``{"value": text}`` when it is UTF-8, else
    ``{"value": base64, "encoding": "base64"}``."""
    try:
        return {"value": data.decode("utf-8"), "encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(data).decode("ascii"), "encoding": "base64"}


class KyfsMcp:
    """The server's state: the workspaces it keeps open (by the name asked, one
    kyfs.api.Workspace each, used from the event loop thread) and the MCPServer with
    kyfs's tools and resources (``.server``).

    ``workspace``: the workspace a tool call without one acts on (None: the active one
    then, as the CLI chooses). ``watch``: follow the timeline and send resource-updated
    events (False with ``--db FILE``: kyfs.timeline watches workspaces of the data
    directory only).
    """

    def __init__(self, workspace: str | None = None, *, watch: bool = True) -> None:
        self.default = workspace
        self.watch = watch
        self._open: dict[str | None, api.Workspace] = {}
        self.bus = InMemorySubscriptionBus()
        self.server: MCPServer[Any] = MCPServer(
            name="kyfs",
            instructions=(
                "kyfs workspaces: keys with values, history and an archive. Values are"
                " resources kyfs://WORKSPACE/KEY; listen to them for changes."
            ),
            subscriptions=self.bus,
            lifespan=self._lifespan,
            log_level="WARNING",
        )
        self._register()

    # --- workspaces ----------------------------------------------------------------
    def workspace(self, name: str | None) -> api.Workspace:
        """The open workspace ``name`` (None: the server's default).

        Raises:
            WorkspaceNotFound: (exit 1). InvalidName: (exit 2).
        """
        name = name or self.default
        found = self._open.get(name)
        if found is None:
            found = self._open[name] = api.open(name)
        return found

    def close(self) -> None:
        """Close every workspace kept open."""
        for workspace in self._open.values():
            workspace.close()
        self._open.clear()

    def _call(
        self, name: str | None, action: Callable[[api.Workspace], dict[str, Any]]
    ) -> CallToolResult:
        try:
            workspace = self.workspace(name)
            return _ok({"workspace": workspace.name, **action(workspace)})
        except KyfsError as error:
            return error_result(error)

    # --- tools and resources --------------------------------------------------------
    def _register(self) -> None:
        server = self.server

        @server.tool(name="get")
        async def get(key: str, workspace: str | None = None) -> CallToolResult:
            """The value of KEY and its version (for set's if_version). A value that is
            not UTF-8 comes as base64 (encoding: base64)."""

            def action(ws: api.Workspace) -> dict[str, Any]:
                value, version = ws.get_versioned(key)
                return {"key": key, **_value_fields(value), "version": version}

            return self._call(workspace, action)

        @server.tool(name="set")
        async def set_(
            key: str,
            value: str,
            workspace: str | None = None,
            if_version: int | None = None,
            if_absent: bool = False,
            ttl: float | None = None,
            base64_value: bool = False,
        ) -> CallToolResult:
            """Store VALUE at KEY (text; base64_value: VALUE is base64 of bytes). With
            if_version only when KEY's version is still that number, with if_absent only
            when KEY does not exist (compare-and-swap: a conflict is the error
            VersionConflict or KeyExists, exit code 7; read again and retry). ttl:
            seconds until the key expires. Returns the new version."""

            def action(ws: api.Workspace) -> dict[str, Any]:
                data: bytes | str = value
                if base64_value:
                    try:
                        data = base64.b64decode(value, validate=True)
                    except ValueError:
                        raise InvalidInput("base64_value: the value is not base64") from None
                stored = ws.set(key, data, if_version=if_version, if_absent=if_absent, ttl=ttl)
                return stored._asdict()

            return self._call(workspace, action)

        @server.tool(name="delete")
        async def delete(key: str, workspace: str | None = None) -> CallToolResult:
            """Delete KEY; it waits in the archive (the restore tool brings it back)."""

            def action(ws: api.Workspace) -> dict[str, Any]:
                ws.delete(key)
                return {"key": key, "deleted": True}

            return self._call(workspace, action)

        @server.tool(name="list")
        async def list_keys(
            prefix: str = "", glob: str | None = None, workspace: str | None = None
        ) -> CallToolResult:
            """The keys starting with PREFIX (and matching the glob GLOB, e.g. user.*),
            sorted."""
            return self._call(workspace, lambda ws: {"keys": ws.keys(prefix, glob=glob)})

        @server.tool(name="search")
        async def search(
            query: str,
            workspace: str | None = None,
            semantic: bool = False,
            fts: bool = False,
            raw: bool = False,
            limit: int = 20,
        ) -> CallToolResult:
            """The best LIMIT keys for QUERY, best first (key, score, snippet): by words
            (BM25; FTS5 syntax with raw), hybrid with meaning where the workspace keeps
            embeddings (unless fts), or by meaning only with semantic=true."""

            def action(ws: api.Workspace) -> dict[str, Any]:
                hits = ws.search(query, raw=raw, limit=limit, semantic=semantic, fts=fts)
                found = [{"key": h.key, "score": h.score, "snippet": h.snippet} for h in hits]
                return {"hits": found}

            return self._call(workspace, action)

        @server.tool(name="history")
        async def history(key: str, workspace: str | None = None) -> CallToolResult:
            """Every recorded change of KEY, oldest first: version (for restore), action,
            size in bytes (null: keeps no value), time, detail."""

            def action(ws: api.Workspace) -> dict[str, Any]:
                rows = [
                    {
                        "version": row.id,
                        "action": row.action,
                        "size": row.size,
                        "time": timeline.iso(row.time_ns),
                        "time_ns": row.time_ns,
                        "detail": row.detail,
                    }
                    for row in ws.history(key)
                ]
                return {"key": key, "history": rows}

            return self._call(workspace, action)

        @server.tool(name="restore")
        async def restore(
            key: str,
            workspace: str | None = None,
            version: int | None = None,
            at: str | None = None,
            force: bool = False,
        ) -> CallToolResult:
            """Bring back KEY: without version or at, the deleted KEY from the archive
            (force: over a key now there); with version (a number from history) or at
            (an ISO 8601 time) that older value, written as a new version."""

            def action(ws: api.Workspace) -> dict[str, Any]:
                entry = ws.restore(key, version=version, at=at, force=force)
                return {"key": key, "size": entry.size, "version": ws.version(key)}

            return self._call(workspace, action)

        @server.tool(name="log")
        async def log_(
            workspace: str | None = None,
            since: str | None = None,
            prefix: str = "",
            limit: int = 1000,
        ) -> CallToolResult:
            """The recorded changes, oldest first (the newest LIMIT): time, action, key,
            size, and who made them (source, user; pid and comm for the mount). since:
            10m, 2h, 7d ago, or an ISO 8601 time; prefix: keys starting with it."""

            def action(ws: api.Workspace) -> dict[str, Any]:
                since_ns = None if since is None else timeline.parse_since(since)
                changes = ws.log(since_ns=since_ns, prefix=prefix)
                shown = changes[-limit:] if limit > 0 else []
                return {
                    "changes": [timeline.as_json(ws.name, c) for c in shown],
                    "total": len(changes),
                }

            return self._call(workspace, action)

        @server.tool(name="snapshot")
        async def snapshot(
            workspace: str | None = None,
            name: str | None = None,
            action: str = "create",
        ) -> CallToolResult:
            """Snapshots of the workspace, instant read-only images sharing its values'
            blocks. action: create (name optional: the UTC time), list, restore (make the
            workspace hold what snapshot NAME holds, recorded in history) or delete."""

            def act(ws: api.Workspace) -> dict[str, Any]:
                if action == "create":
                    made = ws.snapshot(name)
                    return {"snapshot": made.name, "keys": made.keys, "size": made.size}
                if action == "list":
                    return {
                        "snapshots": [
                            {"name": s.name, "time_ns": s.created_ns, "keys": s.keys,
                             "size": s.size}
                            for s in ws.snapshots()
                        ]
                    }  # fmt: skip
                if name is None:
                    raise InvalidInput(f"snapshot {action} needs a name")
                if action == "restore":
                    return {"snapshot": name, "changed": ws.restore_snapshot(name)}
                if action == "delete":
                    ws.delete_snapshot(name)
                    return {"snapshot": name, "deleted": True}
                raise InvalidInput(f"unknown action {action!r}: create, list, restore, delete")

            return self._call(workspace, act)

        @server.tool(name="fork")
        async def fork(
            new: str, workspace: str | None = None, snapshot: str | None = None
        ) -> CallToolResult:
            """Make workspace NEW a copy of the workspace (or of its snapshot SNAPSHOT)
            that then lives on its own, with its history and snapshots."""

            def action(ws: api.Workspace) -> dict[str, Any]:
                with ws.fork(new, snapshot=snapshot) as made:
                    return {"fork": made.name, "keys": len(made.keys())}

            return self._call(workspace, action)

        @server.tool(name="diff")
        async def diff(
            old: str, new: str | None = None, workspace: str | None = None
        ) -> CallToolResult:
            """The keys added, changed and deleted from tree OLD to tree NEW: each a
            workspace (as it is now) or WORKSPACE@SNAPSHOT; @SNAPSHOT is the workspace's
            own; NEW defaults to the workspace of OLD as it is now."""

            def action(ws: api.Workspace) -> dict[str, Any]:
                from kyfs import snapshots

                def named(tree: str) -> str:
                    return f"{ws.name}{tree}" if tree.startswith("@") else tree

                first, second = snapshots.check_pair(
                    named(old), None if new is None else named(new)
                )
                found = ws.diff_trees(first, second)
                return {
                    "old": first, "new": second,
                    "changes": [
                        {"key": c.key, "status": c.status, "what": list(c.what)} for c in found
                    ],
                }  # fmt: skip

            return self._call(workspace, action)

        @server.resource(RESOURCE_TEMPLATE, name="value", description="The value of a key")
        async def value(workspace: str, key: str) -> str | bytes:
            try:
                data = self.workspace(workspace).get(key)
            except NotFound as error:
                raise ResourceNotFoundError(f"{type(error).__name__}: {error}") from None
            except KyfsError as error:
                raise ResourceError(f"{type(error).__name__}: {error}") from None
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data

    # --- change notifications -------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Any) -> AsyncIterator[dict[str, Any]]:
        stop = threading.Event()
        try:
            async with anyio.create_task_group() as group:
                if self.watch:
                    ready = threading.Event()
                    group.start_soon(self._watch, stop, ready)
                    # serve once "now" is fixed: a write after that is told
                    await anyio.to_thread.run_sync(ready.wait, READY_S)
                try:
                    yield {}
                finally:
                    stop.set()
        finally:
            self.close()

    async def _watch(self, stop: threading.Event, ready: threading.Event) -> None:
        """Follow the timeline in a worker thread until ``stop``; publish a
        ResourceUpdated for each changed key (both names of a rename or link); set
        ``ready`` once following (or failed)."""
        bus = self.bus

        def follow() -> None:
            from kyfs.app import engine_session

            try:
                with engine_session(cache=True) as engine:
                    for name, change in timeline.watch(
                        engine, None, stop=stop, poll_s=WATCH_POLL_S, ready=ready
                    ):
                        keys = [change.key]
                        detail = change.detail or ""
                        for lead in ("to ", "from "):
                            if detail.startswith(lead) and change.action in ("rename", "link"):
                                keys.append(detail[len(lead) :])
                        for key in keys:
                            event = ResourceUpdated(uri=resource_uri(name, key))
                            anyio.from_thread.run(bus.publish, event)
            except KyfsError as error:  # the engine failed: say so, keep serving tools
                log.warning("kyfs mcp: change notifications stopped: %s", error)
            finally:
                ready.set()

        with contextlib.suppress(anyio.get_cancelled_exc_class()):
            await anyio.to_thread.run_sync(follow, abandon_on_cancel=True)


# --- HTTP ------------------------------------------------------------------------------
def token_path() -> Path:
    """Where ``kyfs mcp --http`` keeps its bearer token: ``STATE_DIR/mcp-token``."""
    from kyfs.platform import paths

    return paths.state_dir() / TOKEN_FILE


def load_token(path: Path | None = None) -> str:
    """The bearer token of ``kyfs mcp --http`` (``path``, default :func:`token_path`),
    created on first use (43 URL-safe characters, file mode 0600; a wider mode found is
    narrowed to 0600).

    Raises:
        StorageError: (EIO, exit 4) the file cannot be read or written.
    """
    from kyfs.core.errors import StorageError

    path = path or token_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            token = path.read_text(encoding="ascii").strip()
            if token:
                return token
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(token + "\n")
        return token
    except (OSError, UnicodeDecodeError) as error:
        raise StorageError(f"cannot keep the MCP token in {path}: {error}") from None


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def require_token(app: App, token: str) -> App:
    """``app`` (ASGI) answering HTTP requests only when they carry ``Authorization:
    Bearer TOKEN``; others get 401 (lifespan events pass through)."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                body = b'{"error": "unauthorized: send Authorization: Bearer TOKEN"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


def serve_stdio(workspace: str | None, *, watch: bool = True) -> None:
    """Serve MCP on stdin/stdout until the client closes them."""
    KyfsMcp(workspace, watch=watch).server.run("stdio")


def serve_http(
    workspace: str | None, port: int, *, watch: bool = True, ready: Callable[[str], None]
) -> None:
    """Serve MCP over streamable HTTP at ``http://127.0.0.1:PORT/mcp`` (loopback only),
    to requests carrying the bearer token (:func:`load_token`), until interrupted;
    ``ready`` is told the URL before serving.

    Raises:
        StorageError: (exit 4) the token file. InvalidInput: (exit 2) a bad port.
        Conflict: (exit 3) the port is in use.
    """
    import socket

    import uvicorn

    from kyfs.core.errors import Conflict

    if not 0 < port < 65536:
        raise InvalidInput(f"invalid port {port}: use 1 to 65535")
    token = load_token()
    app = KyfsMcp(workspace, watch=watch).server.streamable_http_app(
        streamable_http_path=HTTP_PATH, host="127.0.0.1"
    )
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(("127.0.0.1", port))
    except OSError as error:
        listening.close()
        raise Conflict(f"cannot listen on 127.0.0.1:{port}: {error.strerror}") from None
    with listening:
        ready(f"http://127.0.0.1:{port}{HTTP_PATH}")
        config = uvicorn.Config(
            require_token(app, token), host="127.0.0.1", port=port, log_level="warning"
        )
        uvicorn.Server(config).run(sockets=[listening])
