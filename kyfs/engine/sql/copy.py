"""Copying a workspace from one engine to another, row for row, and proving the copy.

Both engines keep the same tables (kyfs.engine.sql), so a workspace moves losslessly at
that level: nodes with their ids, types, modes, owners, link counts, times, TTLs,
symlink targets and device numbers; every name (hard links stay links); extended
attributes; the block store as it is (each block once, with its address, its references
and the extents of every value, so shared blocks stay shared); the archive; history with
its version numbers; the settings (retention, schema rules, project path, cache TTL, the
inode tag, so st_ino stays the same); collections and the keys' embeddings (the
vectors as stored); snapshots. The search index is not copied: the target rebuilds it from the
values at its first search, and its rebuild marks the keys' embeddings to be made again
where the workspace keeps them.

:func:`fingerprint` reads a workspace through the Workspace interface only and gives
what a copy must keep, with SHA-256 of every value (live, archived and in history);
:func:`differences` compares two.

Every function takes workspaces the caller holds (their locks when shared).
"""

from __future__ import annotations

import hashlib
from typing import Any

from kyfs.core.nodes import DIR, LNK, REG, HistoryEntry
from kyfs.engine.base import Workspace
from kyfs.engine.sql.nodes import NamespaceMixin

# Columns both engines have, table by table, in the order a copy writes them.
TABLES = {
    "nodes": "id, kind, mode, uid, gid, nlink, size, created_ns, mtime_ns, ctime_ns,"
    " atime_ns, expires_ns, target, rdev, stored",
    "entries": "key, parent, node",
    "archive": "id, key, is_dir, mode, size, created_ns, mtime_ns, ctime_ns, deleted_ns,"
    " archived_ns, kind, uid, gid, target, rdev",
    "history": (
        "id, key, action, size, time_ns, detail, pid, since_ns, shared, mode,"
        " source, user_name, comm"
    ),
    "extents": "owner, pos, block",
    "xattrs": "node, name, value",
    # semantic search (kyfs.engine.sql.vectors): collections are the user's own data
    "vector_spaces": "name, dim, codec, model",
    "vector_chunks": "id, space, count, items, scales, vectors",
    "vector_slots": "space, item, chunk, slot",
    "collection_items": "id, collection, name, metadata, document",
    # snapshots (kyfs.engine.sql.snapshots): their own values are extents above
    "snapshots": "id, name, created_ns, history_id, keys, size",
    "snapshot_items": "id, snapshot, key, parent, node, kind, mode, uid, gid, size,"
    " created_ns, mtime_ns, ctime_ns, target, rdev, shared, expires_ns",
    "snapshot_xattrs": "item, name, value",
}
ENGINE_META = frozenset({"pg_schema_version"})  # settings that belong to one engine's layout
READ_PIECE = 4 * 1024 * 1024  # bytes hashed at a time


def copy_workspace(source: NamespaceMixin, target: NamespaceMixin) -> dict[str, int]:
    """Replace everything in ``target`` (a workspace just made, of any engine) by the rows
    of ``source``, in one transaction of the target's, from one snapshot of the
    source's; returns how many rows of each table were copied.

    Raises:
        StorageError / NoSpace: (EIO / ENOSPC, exit 4) either engine failed; the target
            is left as it was.
    """
    counts: dict[str, int] = {}
    with source._snapshot() as src, target._atomic() as dst:
        for table in (
            "extents", "blocks", "entries", "nodes", "archive", "history", "index_pending",
            "xattrs", "vector_spaces", "vector_chunks", "vector_slots", "collection_items",
            "embed_pending", "snapshots", "snapshot_items", "snapshot_xattrs",
        ):  # fmt: skip
            dst.execute(f"DELETE FROM {table}")
        dst.execute("DELETE FROM search_text")
        for table, columns in TABLES.items():
            marks = ", ".join("?" * len(columns.split(",")))
            rows = src.execute(f"SELECT {columns} FROM {table} ORDER BY 1").fetchall()
            for row in rows:
                values = tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                dst.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", values)
            counts[table] = len(rows)
        ids = [row[0] for row in src.execute("SELECT id FROM blocks ORDER BY id").fetchall()]
        for block_id in ids:  # one at a time: memory stays at one block
            row = src.execute(
                "SELECT id, hash, refs, size, codec, data FROM blocks WHERE id = ?", (block_id,)
            ).fetchone()
            dst.execute(
                "INSERT INTO blocks (id, hash, refs, size, codec, data) VALUES (?, ?, ?, ?, ?, ?)",
                (row[0], bytes(row[1]), row[2], row[3], row[4], bytes(row[5])),
            )
        counts["blocks"] = len(ids)
        settings = src.execute("SELECT name, value FROM meta").fetchall()
        for name, value in settings:
            if name in ENGINE_META:
                continue
            dst.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
        counts["meta"] = len(settings)
        dst.execute(
            "INSERT INTO index_pending (node_id) SELECT id FROM nodes WHERE kind = ?"
            " ON CONFLICT DO NOTHING",
            (REG,),
        )
        target._after_copy(dst, source._node_ids_used(src))
    target._load_identity()
    forget = getattr(target, "forget_xattr_names", None)  # (kyfs.engine.sql.xattrs)
    if forget is not None:
        forget()
    return counts


def _digest(workspace: Workspace, node_id: int, size: int) -> str:
    hashed = hashlib.sha256()
    for offset in range(0, size, READ_PIECE):
        hashed.update(workspace.read(node_id, offset, min(READ_PIECE, size - offset)))
    return hashed.hexdigest()


def _row_digest(workspace: Workspace, row: HistoryEntry) -> list[Any]:
    value = None
    if row.size is not None and row.id is not None:
        value = hashlib.sha256(workspace.version_value(row.id)).hexdigest()
    return [row.id, row.action, row.time_ns, row.detail, row.size, row.mode, value]


def fingerprint(workspace: Workspace) -> dict[str, Any]:
    """What a lossless copy keeps, read through the Workspace interface: every name with
    its node (id, type, mode, owner, links, size, times, TTL, a symlink's target, the
    SHA-256 of a value, its extended attributes), every history row (with the SHA-256 of
    its value, and who made it), every archived entry (with the SHA-256 of its value)
    and the settings but the engine's own."""
    names: dict[str, Any] = {}
    pending = [""]
    while pending:
        directory = pending.pop()
        for entry in workspace.children(directory):
            item: dict[str, Any] = {"node": [*list(entry)[2:], entry.id]}
            if entry.kind == DIR:
                pending.append(entry.key)
            elif entry.kind == LNK:
                item["target"] = workspace.readlink(entry.key).hex()
            elif not entry.is_special:  # a special node's type and rdev are in "node"
                item["sha256"] = _digest(workspace, entry.id, entry.size)
                item["expires_ns"] = workspace.expiry(entry.key)
            found = workspace.xattr_names(entry.key)
            if found:
                item["xattrs"] = {n: workspace.get_xattr(entry.key, n).hex() for n in found}
            names[entry.key] = item
    history = {
        key: [_row_digest(workspace, h) for h in workspace.history(key)]
        for key in workspace.history_keys()
    }
    archived = [
        [*list(a.entry), a.deleted_ns]
        + ([_digest(workspace, a.entry.id, a.entry.size)] if a.entry.kind == REG else [])
        for a in workspace.archived()
    ]
    timeline = [list(change) for change in workspace.timeline()]  # who: kyfs.core.actor
    meta: dict[str, str | None] = {
        k: v for k, v in workspace.meta().items() if k not in ENGINE_META
    }
    space = workspace.vector_space()
    meta["(embeddings)"] = None if space is None else f"{space.model}/{space.dim}"
    for collection in workspace.collections():
        meta[f"(collection {collection.name})"] = (
            f"{collection.dim}/{workspace.count_items(collection.name)}"
        )
    for snapshot in workspace.snapshots():
        prints = workspace.fingerprints(snapshot.name)
        meta[f"(snapshot {snapshot.name})"] = hashlib.sha256(
            repr(
                sorted((k, f.kind, f.mode, f.size, f.digest.hex()) for k, f in prints.items())
            ).encode()
        ).hexdigest()
    top = list(workspace.stat(""))[2:]
    top.append({n: workspace.get_xattr("", n).hex() for n in workspace.xattr_names("")})
    return {"top": top, "names": names, "history": history, "timeline": timeline,
            "archived": archived, "meta": meta}  # fmt: skip


def differences(source: dict[str, Any], target: dict[str, Any], limit: int = 20) -> list[str]:
    """Where two fingerprints differ, as sentences (at most ``limit``; [] when equal)."""
    found: list[str] = []
    if source["top"] != target["top"]:
        found.append("the top directory's attributes differ")
    for key in sorted(set(source["names"]) | set(target["names"])):
        if key not in target["names"]:
            found.append(f"missing: {key}")
        elif key not in source["names"]:
            found.append(f"extra: {key}")
        elif source["names"][key] != target["names"][key]:
            found.append(f"different: {key}")
    for part in ("history", "timeline", "archived", "meta"):
        if source[part] != target[part]:
            found.append(f"the {part} differs")
    return found[:limit]
