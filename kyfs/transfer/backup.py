"""Backups (a verified ``.tar.gz`` of workspace snapshots) and export/import of keys.

Backup archive layout (tarfile, gzip)::

    manifest.json             {"format": "kyfs-backup", "version": 1, "created": ISO UTC,
                               "files": [{"path", "sha256", "size", "workspace", "keys"}]}
    workspaces/<name>.db      a consistent snapshot (SQLite online backup API)
    config.toml               when there is one
    users/<user>.toml         each user's state (active workspace and cursor): full backups
    cursors/<user>/<name>.toml  each user's cursors: full backups

The manifest is the first member. ``verify`` checks every listed file's SHA-256
and size, that nothing is missing or extra, and each snapshot's key count.
``restore`` verifies before touching anything. A full restore (no ``-w``) also puts
back the settings, users' state and cursors that are missing here (``--force``: all of
them), each checked to be TOML of at most STATE_MAX bytes (ProntoDB backs these up too).

Export formats: ``jsonl`` (one object per key), ``json`` (one document), and
``dir`` (a directory tree of files, the mount's layout). Binary values are
base64 in JSON. Thread-safety: the functions share nothing.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kyfs.core.errors import (
    InvalidInput,
    StorageError,
    UnsoundInput,
    WorkspaceExists,
    WorkspaceNotFound,
)
from kyfs.core.names import WORKSPACE_NAME_RE, check_key, check_stored_name, check_workspace_name
from kyfs.core.nodes import ImportItem
from kyfs.engine import open_engine
from kyfs.engine.base import Workspace
from kyfs.engine.sqlite.workspace import SqliteWorkspace
from kyfs.platform import config, journal, paths
from kyfs.platform.config import SHARED_WORKSPACE
from kyfs.transfer import recovery

FORMAT = "kyfs-backup"
VERSION = 1
CHUNK = 1024 * 1024  # bytes read at a time when hashing
MANIFEST_MAX = 4 * 1024**2  # bytes a backup's manifest.json may have
RECORD_MAX = 64 * 1024**2  # bytes of one JSON Lines record (an import reads one at a time)
DOCUMENT_MAX = 256 * 1024**2  # bytes of a whole .json export read by import
STATE_MAX = 1024**2  # bytes of one settings, user state or cursor file in a backup
_NAME = WORKSPACE_NAME_RE.pattern  # users and cursors are named by the workspace rule
STATE_PATH = re.compile(rf"config\.toml|users/{_NAME}\.toml|cursors/{_NAME}/{_NAME}\.toml")


def _state_files() -> list[tuple[str, Path]]:
    """(path in the archive, file here) of the settings, every user's state and cursors."""
    return [(rel, f) for rel, f in paths.config_files() if STATE_PATH.fullmatch(rel)]


def default_backup_name() -> Path:
    """``kyfs-backup-YYYYmmddTHHMMSSZ.tar.gz`` in the current directory (UTC)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"kyfs-backup-{stamp}.tar.gz")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for piece in iter(lambda: handle.read(CHUNK), b""):
            digest.update(piece)
    return digest.hexdigest()


def _count_keys(path: Path) -> int:
    """Keys in the snapshot ``path`` (a copy of kyfs's own: a fresh snapshot, or a file
    extracted from an archive after its checksum was checked), read through the engine.
    A snapshot of an older schema (a backup made by an older kyfs) is migrated in
    place first, so old backups verify and restore.

    Raises:
        InvalidInput: (exit 2) not a kyfs workspace snapshot (foreign schema included).
    """
    try:
        store = SqliteWorkspace(path, retention_s=None)
    except StorageError as exc:
        raise InvalidInput(f"{path.name}: not a kyfs workspace snapshot: {exc}") from None
    try:
        return store.count_keys()
    except StorageError as exc:
        raise InvalidInput(f"{path.name}: not a kyfs workspace snapshot: {exc}") from None
    finally:
        store.close()


def create(
    output: Path, names: list[str] | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Write a backup of ``names`` (every workspace when None) to ``output``; return the
    manifest. Snapshots are consistent while the mount writes: a reflink of each
    workspace's file where the file system has them (Workspace.clone_to: XFS, btrfs;
    nothing is written twice), else SQLite's online backup API. Either way the archive
    holds the bytes, sharing nothing with the workspaces.

    Raises:
        WorkspaceNotFound: (exit 1) a named workspace does not exist.
    """
    partial = output.absolute().with_name(output.name + ".partial")
    # Killed midway, the next kyfs command deletes the snapshots and the partial archive
    # (kyfs.transfer.recovery); the archive appears whole or not at all (one rename).
    with journal.begin("backup-create", partial=str(partial)) as op:
        tmp = op.folder
        workspaces = open_engine()
        files: list[dict[str, Any]] = []
        try:
            for name in names or workspaces.names():
                with workspaces.shared():
                    store = workspaces.open(name)
                    snapshot = tmp / f"{name}.db"
                    try:
                        if not store.clone_to(snapshot):  # a reflink, on XFS or btrfs
                            store.backup_to(snapshot)
                    finally:
                        store.close()
                keys = _count_keys(snapshot)  # before the checksum: opening may touch it
                files.append(
                    {
                        "path": f"workspaces/{name}.db",
                        "sha256": _sha256(snapshot),
                        "size": snapshot.stat().st_size,
                        "workspace": name,
                        "keys": keys,
                    }
                )
                if progress:
                    progress(name)
        finally:
            workspaces.close()
        # A full backup keeps every settings file; one of some workspaces, config.toml.
        state = {r: f for r, f in _state_files() if names is None or r == "config.toml"}
        for rel, file in state.items():
            files.append({"path": rel, "sha256": _sha256(file), "size": file.stat().st_size})
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            "files": files,
        }
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # whatever the umask
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
            for item in files:
                source = state.get(item["path"]) or tmp / Path(item["path"]).name
                tar.add(source, arcname=str(item["path"]), recursive=False)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, output)
    return manifest


def _check_manifest(manifest: Any, archive: Path) -> dict[str, Any]:
    """The manifest, when it has the shape kyfs writes: format and version, and files with
    a relative path under ``workspaces/`` (or a settings, user state or cursor file,
    STATE_PATH), a hex SHA-256, a size in bytes, and for workspaces a valid name and a
    key count.

    Raises:
        InvalidInput: (exit 2) anything else.
    """

    def bad(why: str) -> InvalidInput:
        return InvalidInput(f"{archive}: not a kyfs backup manifest: {why}")

    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise InvalidInput(f"{archive}: unknown backup format")
    files = manifest.get("files")
    if not isinstance(files, list) or len(files) > 100_000:
        raise bad("no list of files")
    for item in files:
        if not isinstance(item, dict):
            raise bad("a file entry is not an object")
        path, digest, size = item.get("path"), item.get("sha256"), item.get("size")
        if not isinstance(path, str) or not (
            STATE_PATH.fullmatch(path) or re.fullmatch(r"workspaces/[^/]+\.db", path)
        ):
            raise bad(f"unexpected path {path!r}")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise bad(f"bad checksum for {path}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"bad size for {path}")
        if STATE_PATH.fullmatch(path):
            if size > STATE_MAX:
                raise bad(f"{path} is over {STATE_MAX} bytes")
        else:
            name, keys = item.get("workspace"), item.get("keys")
            if not isinstance(name, str) or path != f"workspaces/{name}.db":
                raise bad(f"{path} names no workspace")
            try:
                check_stored_name(name)
            except InvalidInput as exc:
                raise bad(str(exc)) from None
            if not isinstance(keys, int) or isinstance(keys, bool) or keys < 0:
                raise bad(f"bad key count for {path}")
    return manifest


@dataclass
class Verified:
    """A verified backup: its manifest, and the directory its files were extracted to."""

    manifest: dict[str, Any]
    directory: Path


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        if not member.isfile() or member.name.startswith("/") or ".." in member.name.split("/"):
            raise InvalidInput(f"backup holds an unexpected entry: {member.name!r}")
        yield member


def verify(archive: Path, into: Path) -> Verified:
    """Check ``archive`` against its manifest; extract its files into the directory
    ``into`` (an operation's folder, kyfs.platform.journal, that the caller removes).

    Raises:
        InvalidInput: (exit 2) not a kyfs backup, or a file missing, extra, changed, or
            with a different key count.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _members(tar)
            first = next(members, None)
            if first is None or first.name != "manifest.json":
                raise InvalidInput(f"{archive}: not a kyfs backup (no manifest first)")
            extracted = tar.extractfile(first)
            assert extracted is not None
            if first.size > MANIFEST_MAX:
                raise InvalidInput(f"{archive}: the manifest is over {MANIFEST_MAX} bytes")
            manifest = _check_manifest(json.loads(extracted.read()), archive)
            expected = {f["path"]: f for f in manifest["files"]}
            free = shutil.disk_usage(into).free
            if sum(f["size"] for f in expected.values()) > free:
                raise InvalidInput(f"{archive}: its files need more than the {free} bytes free")
            seen = set()
            for member in members:
                item = expected.get(member.name)
                if item is None or member.name in seen:
                    raise InvalidInput(f"{archive}: {member.name} is not in the manifest")
                if member.size != item["size"]:  # checked before a byte is written
                    raise InvalidInput(f"{archive}: {member.name} is not the size it says")
                target = into / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                with target.open("wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
                if _sha256(target) != item["sha256"] or target.stat().st_size != item["size"]:
                    raise InvalidInput(f"{archive}: {member.name} does not match its checksum")
                if "keys" in item and _count_keys(target) != item["keys"]:
                    raise InvalidInput(
                        f"{archive}: {member.name} does not hold {item['keys']} keys"
                    )
                seen.add(member.name)
            missing = set(expected) - seen
            if missing:
                raise InvalidInput(
                    f"{archive}: missing from the archive: {', '.join(sorted(missing))}"
                )
    except (tarfile.TarError, OSError, ValueError, KeyError, EOFError) as exc:
        raise InvalidInput(f"{archive}: not a readable kyfs backup: {exc}") from None
    return Verified(manifest, into)


@dataclass
class Restored:
    """What a restore put back: workspace names, and settings/state/cursor files (their
    paths in the archive)."""

    workspaces: list[str]
    state: list[str]


def _wanted_state(
    directory: Path, manifest: dict[str, Any], force: bool
) -> list[tuple[str, Path, Path]]:
    """The settings, user state and cursor files of a full backup to put back, as (path
    in the archive, extracted file, file here): those missing here, or all with
    ``force``. Each must parse as TOML (tomllib); one that does not is refused before
    any is written.

    Raises:
        InvalidInput: (exit 2) a file is not TOML.
    """
    import tomllib

    wanted = []
    for item in manifest["files"]:
        if not STATE_PATH.fullmatch(item["path"]):
            continue
        source = directory / item["path"]
        try:
            tomllib.loads(source.read_text("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"{item['path']} in the backup is not TOML: {exc}") from None
        target = paths.config_member(item["path"])
        if force or not target.exists():
            wanted.append((item["path"], source, target))
    return wanted


def restore(
    archive: Path, name: str | None = None, as_name: str | None = None, force: bool = False
) -> Restored:
    """Restore workspaces from ``archive`` (all, or only ``name``, optionally as
    ``as_name``); a full restore also puts back settings, users' state and cursors
    (:func:`_wanted_state`). The archive is verified, and every workspace file copied and
    validated, before anything is touched; then the journal lists what to install (the
    commit point: killed after it, the next kyfs command installs the rest,
    kyfs.transfer.recovery) and each workspace takes its place in one step.

    Raises:
        InvalidInput: (exit 2) the archive does not verify; nothing was touched.
        WorkspaceNotFound: (exit 1) ``name`` is not in the backup.
        WorkspaceExists: (exit 3) a target exists and ``force`` is off. With ``force``
            the existing workspace moves to the trash first.
    """
    if as_name is not None:
        check_workspace_name(as_name)
    with journal.begin("restore", engine=config.engine_url(), archive=str(archive)) as op:
        checked = verify(archive, paths.make_private_dir(op.file("files")))
        wanted = [f for f in checked.manifest["files"] if "workspace" in f]
        if name is not None:
            wanted = [f for f in wanted if f["workspace"] == name]
            if not wanted:
                raise WorkspaceNotFound(f"workspace {name} is not in {archive}")
        elif as_name is not None and len(wanted) != 1:
            raise InvalidInput("--as needs -w NAME when the backup holds several workspaces")
        workspaces = open_engine()
        try:
            targets = [(f, as_name or f["workspace"]) for f in wanted]
            for _, target in targets:
                check_stored_name(target)
            # The shared workspace every command makes is no clash while it is empty, so a
            # full restore on a new machine needs no --force.
            clashes = [t for _, t in targets if workspaces.exists(t) and not (
                t == SHARED_WORKSPACE and workspaces.info(t).keys == 0)]  # fmt: skip
            if clashes and not force:
                raise WorkspaceExists(
                    "these workspaces exist: " + ", ".join(clashes) + " (use --force or --as)"
                )
            staging = paths.make_private_dir(op.file("staged"))
            installs = [
                {
                    "workspace": target,
                    "staged": str(workspaces.stage(checked.directory / item["path"], staging)),
                    "replace": True,  # the one it replaces goes to the trash
                }
                for item, target in targets
            ]
            state = [] if name is not None else _wanted_state(
                checked.directory, checked.manifest, force)  # fmt: skip
            op.save(installs=installs, state=[[str(src), str(dst)] for _, src, dst in state])
            restored = recovery.install(op, workspaces)
        finally:
            workspaces.close()
    return Restored(restored, [rel for rel, _, _ in state])


# --- export and import ------------------------------------------------------------------
def _entry_json(store: Workspace, key: str) -> dict[str, Any]:
    entry = store.stat(key)
    value = store.get(key)
    data: dict[str, Any] = {"key": key}
    try:
        data["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        data["value_base64"] = base64.b64encode(value).decode("ascii")
    data["mode"] = f"{entry.mode:04o}"
    data["created_ns"], data["mtime_ns"] = entry.created_ns, entry.mtime_ns
    return data


def export(store: Workspace, workspace: str, fmt: str, output: Path | None) -> int:
    """Write every key of ``store`` as ``fmt`` (jsonl, json, csv, dir) to ``output``
    (stdout for jsonl/json/csv when None); return the number of keys. CSV (KyCLI's
    ``kye``; RFC 4180 by Python's csv module) has the columns ``key,value,encoding``:
    a value that is not UTF-8 is base64 with ``encoding`` ``base64``, else the text.
    Special nodes (FIFOs, sockets, device nodes) hold no value and are left out, as
    ``tar`` leaves out sockets.

    Raises:
        InvalidInput: (exit 2) unknown format, or ``dir`` without an output directory.
    """
    keys = [key for key in store.keys() if not store.stat(key).is_special]
    if fmt == "dir":
        if output is None:
            raise InvalidInput("--format dir needs -o DIRECTORY")
        output.mkdir(mode=0o700, parents=True, exist_ok=True)
        top = output.resolve()
        for directory in _all_dirs(store):
            _inside(top, directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        for key in keys:
            target = _inside(top, key)
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            entry = store.stat(key)
            if entry.is_symlink:  # as cp -a: the link itself, never followed
                os.symlink(store.readlink(key), target)
                continue
            # O_NOFOLLOW: a link already standing at the path is never written through.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            try:
                fd = os.open(target, flags, 0o600)
            except OSError as exc:
                raise UnsoundInput(
                    f"cannot export {key[:80]!r} to {target}: {exc.strerror}"
                ) from None
            with os.fdopen(fd, "wb") as stream:
                for piece in store.iter_value(key):
                    stream.write(piece)
            os.utime(target, ns=(entry.atime_ns, entry.mtime_ns))
            target.chmod(entry.mode & 0o777)  # never setuid, setgid or sticky
        return len(keys)
    if fmt not in ("jsonl", "json", "csv"):
        raise InvalidInput(f"unknown export format {fmt!r}: use jsonl, json, csv or dir")
    out = _private_file(output) if output else None
    try:
        write = out.write if out else _stdout_write
        if fmt == "csv":
            _write_csv(store, keys, write)
        elif fmt == "jsonl":
            for key in keys:
                write(json.dumps(_entry_json(store, key), ensure_ascii=False) + "\n")
        else:
            document = {"workspace": workspace, "keys": [_entry_json(store, k) for k in keys]}
            write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    finally:
        if out:
            out.close()
    return len(keys)


def _inside(top: Path, key: str) -> Path:
    """``top / key``, checked to stay inside ``top`` once every link is resolved.

    Raises:
        UnsoundInput: (EINVAL, exit 2) the key is not a valid key or leads outside.
    """
    try:
        check_key(key)
    except InvalidInput as exc:
        raise UnsoundInput(f"refusing to export the key {key[:80]!r}: {exc}") from None
    target = top / key
    if not target.parent.resolve().is_relative_to(top):
        raise UnsoundInput(f"refusing to export {key[:80]!r}: it leads outside {top}")
    return target


def _private_file(path: Path) -> Any:
    """``path`` opened for writing text, created 0600 whatever the umask (private data)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8")


def _stdout_write(text: str) -> None:
    import sys

    sys.stdout.write(text)


CSV_COLUMNS = ("key", "value", "encoding")  # kyfs export --format csv, KyCLI's kye and kyi


def _write_csv(store: Workspace, keys: list[str], write: Callable[[str], Any]) -> None:
    """``keys`` of ``store`` as CSV rows (CSV_COLUMNS, a header first) through ``write``."""
    buffer = io.StringIO()
    rows = csv.writer(buffer)
    rows.writerow(CSV_COLUMNS)
    for key in keys:
        value = store.get(key)
        try:
            rows.writerow((key, value.decode("utf-8"), ""))
        except UnicodeDecodeError:
            rows.writerow((key, base64.b64encode(value).decode("ascii"), "base64"))
        write(buffer.getvalue())
        buffer.seek(0)
        buffer.truncate()
    write(buffer.getvalue())


def _read_csv(handle: BinaryIO) -> Iterator[ImportItem]:
    """The keys of a CSV export (CSV_COLUMNS; ``encoding`` may be left out, as KyCLI's
    ``key,value`` files do). A field is at most RECORD_MAX bytes.

    Raises:
        InvalidInput: (exit 2) no ``key`` and ``value`` columns, or a bad row.
    """
    csv.field_size_limit(RECORD_MAX)
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    reader = csv.DictReader(text)
    if not reader.fieldnames or not {"key", "value"} <= set(reader.fieldnames):
        raise InvalidInput("a CSV import needs the columns key and value")
    for row in reader:
        key, value = row.get("key"), row.get("value")
        if key is None or value is None:
            raise InvalidInput(f"CSV line {reader.line_num}: a row needs a key and a value")
        if (row.get("encoding") or "") == "base64":
            yield ImportItem(key, base64.b64decode(value, validate=True))
        else:
            yield ImportItem(key, value.encode("utf-8"))


def _all_dirs(store: Workspace) -> list[str]:
    found, pending = [], [""]
    while pending:
        directory = pending.pop()
        for entry in store.children(directory):
            if entry.is_dir:
                found.append(entry.key)
                pending.append(entry.key)
    return found


def _item(data: Any) -> ImportItem:
    try:
        if not isinstance(data, dict):
            raise TypeError("a record is a JSON object")
        key = data["key"]
        if not isinstance(key, str):
            raise TypeError(f"a key is a string, not {key!r}")
        if "value_base64" in data:
            value = base64.b64decode(data["value_base64"], validate=True)
        else:
            value = str(data["value"]).encode("utf-8")
        mode = int(data["mode"], 8) & 0o777 if "mode" in data else None  # no setuid & co
        created, mtime = (_time_ns(data.get(k)) for k in ("created_ns", "mtime_ns"))
        return ImportItem(key, value, mode, created, mtime)
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidInput(f"not a kyfs export record: {exc}") from None


def _time_ns(value: Any) -> int | None:
    """A time from an import: None, or integer ns since the epoch within 64 bits.

    Raises:
        ValueError: anything else ("yesterday", floats, out of range).
    """
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError(f"a time must be integer nanoseconds since the epoch, not {value!r}")
    return value


def read_export(path: Path) -> Iterator[ImportItem]:
    """The keys of an export: a ``.jsonl``, ``.json`` or ``.csv`` file, or a directory tree.

    Raises:
        InvalidInput: (exit 2) unreadable or not an export.
    """
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
            stat = file.stat()
            yield ImportItem(
                file.relative_to(path).as_posix(), file.read_bytes(), stat.st_mode & 0o777,
                None, stat.st_mtime_ns,
            )  # fmt: skip
        return
    try:
        with path.open("rb") as handle:
            if path.suffix == ".csv":
                yield from _read_csv(handle)
                return
            if path.suffix == ".json":
                raw = handle.read(DOCUMENT_MAX + 1)
                if len(raw) > DOCUMENT_MAX:
                    raise InvalidInput(
                        f"{path}: over {DOCUMENT_MAX} bytes: import it as JSON Lines instead"
                    )
                document = json.loads(raw.decode("utf-8"))
                records = document["keys"] if isinstance(document, dict) else document
                if not isinstance(records, list):
                    raise TypeError("no list of keys")
                yield from map(_item, records)
                return
            for number, line in enumerate(iter(lambda: handle.readline(RECORD_MAX + 1), b""), 1):
                if len(line) > RECORD_MAX:
                    raise InvalidInput(f"{path}: line {number} is over {RECORD_MAX} bytes")
                if line.strip():
                    yield _item(json.loads(line.decode("utf-8")))
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a kyfs export: {exc}") from None
    except csv.Error as exc:
        raise InvalidInput(f"{path}: not a CSV export: {exc}") from None


def import_path(store: Workspace, path: Path, conflict: str = "error") -> int:
    """Import an export into ``store`` in one transaction; return the keys written.

    Raises:
        InvalidInput: (exit 2). AlreadyExists: (exit 3) a key exists (``conflict``
            as Workspace.import_entries).
    """
    try:
        return store.import_entries(list(read_export(path)), conflict=conflict)
    except OSError as exc:
        raise StorageError(f"cannot import {path}: {exc}") from None
