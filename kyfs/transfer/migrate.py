"""Moving data in from other tools: KyCLI, KyCLI-style scoped files and ProntoDB.

The readers are in kyfs.sources; this module plans, writes, validates and cleans
up, in the contextd style: ``analyze`` (what would happen), ``run`` (write it,
workspaces in parallel), ``validate`` (every key present, SHA-256 equal, counts
equal), ``cleanup`` (only after a passing validate: the source moves to the
trash, never deleted). Sources are never modified.

Thread-safety: ``run`` writes each workspace from its own thread with its own
SqliteEngine and Store; the functions share nothing else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kyfs.core.errors import (
    InvalidInput,
    KeyNotFound,
    KyfsError,
    WorkspaceExists,
    WorkspaceNotFound,
)
from kyfs.core.nodes import ImportItem, ImportVersion
from kyfs.engine import AnyEngine, open_engine, open_engine_at
from kyfs.platform import config, journal, paths
from kyfs.transfer import recovery
from kyfs.transfer.sources import HistoryRow, Record, SourceData, iter_workspaces, read_kycli

MERGE_RULES = ("keep", "replace")  # keep: stored values win; replace: source wins (archived)


@dataclass
class WorkspacePlan:
    """What a migration would write to one workspace."""

    name: str
    keys: int
    bytes: int
    archived: int
    exists: bool
    conflicts: int  # keys the workspace already holds
    existing_keys: int = 0  # keys in the existing workspace (0: nothing to clash with)


@dataclass
class Plan:
    """The analysis of a source: per-workspace plans, name changes, totals."""

    source: str
    workspaces: list[WorkspacePlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def keys(self) -> int:
        """Live keys in the source."""
        return sum(w.keys for w in self.workspaces)

    @property
    def bytes(self) -> int:
        """Bytes of live values in the source."""
        return sum(w.bytes for w in self.workspaces)

    def as_dict(self) -> dict[str, object]:
        """The plan as JSON-ready data."""
        return {
            "source": self.source,
            "keys": self.keys,
            "bytes": self.bytes,
            "workspaces": [w.__dict__ for w in self.workspaces],
            "invalid_names": self.notes,
            "conflicts": sum(w.conflicts for w in self.workspaces),
        }


def _existing_keys(name: str) -> set[str] | None:
    workspaces = open_engine()
    try:
        if not workspaces.exists(name):
            return None
        with workspaces.using(name) as store:
            return set(store.keys())
    finally:
        workspaces.close()


def analyze(data: SourceData, source: str) -> Plan:
    """Plan the migration of ``data`` (read from ``source``) without writing anything."""
    plan = Plan(source, notes=list(data.notes))
    archived: dict[str, int] = {}
    for record, _ in data.archived:
        archived[record.workspace] = archived.get(record.workspace, 0) + 1
    names = {r.workspace for r in data.live} | set(archived)
    live = dict(iter_workspaces(data.live))
    for name in sorted(names):
        records = live.get(name, [])
        existing = _existing_keys(name)
        plan.workspaces.append(
            WorkspacePlan(
                name=name,
                keys=len(records),
                bytes=sum(len(r.value) for r in records),
                archived=archived.get(name, 0),
                exists=existing is not None,
                conflicts=len({r.key for r in records} & (existing or set())),
                existing_keys=len(existing or ()),
            )
        )
    return plan


def _item(record: Record) -> ImportItem:
    return ImportItem(
        record.key, record.value, None, record.created_ns, record.mtime_ns, record.expires_ns
    )


def _write_workspace(
    workspaces: AnyEngine,
    name: str,
    records: list[Record],
    archived: list[tuple[Record, int]],
    history: list[HistoryRow],
    merge: str | None,
) -> int:
    """Write one workspace's keys, archive and history into ``workspaces`` (made when
    missing); return the keys written. Archive and history rows already there are
    skipped (Workspace.import_archived, import_history), so a rerun adds nothing twice."""
    if not workspaces.exists(name):
        workspaces.create(name)
    with workspaces.using(name) as store:
        written = store.import_entries(map(_item, records), conflict=merge or "error")
        store.import_archived((_item(r), when) for r, when in archived)
        store.import_history(
            ImportVersion(row.key, row.action, row.value, row.when, "kycli") for row in history
        )
        return written


def run(
    data: SourceData,
    source: str,
    *,
    merge: str | None = None,
    concurrency: int = 4,
    dry_run: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> Plan:
    """Write ``data`` into kyfs, one thread per workspace (at most ``concurrency``).

    Refuses, before writing anything, to write into an existing workspace unless
    ``merge`` is a rule of MERGE_RULES; a ``dry_run`` returns the plan, conflicts
    shown, and refuses nothing. ``progress(workspace, keys)`` is called as
    each workspace finishes. History rows go to their own workspace.

    Raises:
        WorkspaceExists: (exit 3) a target workspace holds keys and ``merge`` is None
            (an empty one, such as the ``default`` the first command made, is written
            into).
        InvalidInput: (exit 2) an unknown merge rule.
    """
    if merge is not None and merge not in MERGE_RULES:
        raise InvalidInput(f"unknown merge rule {merge!r}: use one of {', '.join(MERGE_RULES)}")
    plan = analyze(data, source)
    if dry_run:  # the plan, conflicts and all: nothing is written, so nothing is refused
        return plan
    # An existing workspace without keys (the default the first command made) is no clash.
    taken = [w.name for w in plan.workspaces if w.exists and w.existing_keys]
    if taken and merge is None:
        raise WorkspaceExists(
            "these workspaces exist already: " + ", ".join(taken) + " (use --merge keep|replace)"
        )
    live = dict(iter_workspaces(data.live))
    archived: dict[str, list[tuple[Record, int]]] = {}
    for record, when in data.archived:
        archived.setdefault(record.workspace, []).append((record, when))

    histories: dict[str, list[HistoryRow]] = {}
    for row in data.history:
        histories.setdefault(row.workspace, []).append(row)

    def one(name: str, directory: Path | None) -> tuple[str, int]:
        workspaces = open_engine_at(None, directory) if directory else open_engine()
        try:
            return name, _write_workspace(workspaces, name, live.get(name, []),
                archived.get(name, []), histories.get(name, []), merge)  # fmt: skip
        finally:
            workspaces.close()

    # New workspaces are written whole into staged files first, then installed in one
    # step each: killed before the journal lists them, nothing shows; after, the next
    # kyfs command installs the rest (kyfs.transfer.recovery). Workspaces that exist are
    # merged into afterwards, a transaction at a time; run again, the merge adds nothing
    # twice.
    new = [w.name for w in plan.workspaces if not w.exists]
    merged = [w.name for w in plan.workspaces if w.exists]
    with journal.begin("migrate", engine=config.engine_url(), source=source) as op:
        staging = paths.make_private_dir(op.file("staged"))
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            counts = dict(pool.map(lambda n: one(n, staging), new))
        installs = [
            {"workspace": n, "staged": str(staging / f"{n}{paths.DB_SUFFIX}"), "replace": False}
            for n in new
        ]
        op.save(installs=installs)
        workspaces = open_engine()
        try:
            recovery.install(op, workspaces)
        finally:
            workspaces.close()
        for name in new:
            if progress:
                progress(name, counts[name])
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            for name, written in pool.map(lambda n: one(n, None), merged):
                if progress:
                    progress(name, written)
    return plan


@dataclass
class Validation:
    """The outcome of ``validate``: ``ok`` when every key is present with equal SHA-256."""

    keys: int = 0
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is missing or different and every key was checked."""
        return not self.missing and not self.different and self.matched == self.keys

    def summary(self) -> str:
        """One line for people."""
        if self.ok:
            return f"{self.matched} keys migrated, checksums match"
        return (
            f"{self.matched} of {self.keys} keys match; {len(self.missing)} missing, "
            f"{len(self.different)} different"
        )


def validate(data: SourceData) -> Validation:
    """Check that every live key of ``data`` is in kyfs with an equal SHA-256."""
    result = Validation(keys=len(data.live))
    workspaces = open_engine()
    try:
        for name, records in iter_workspaces(data.live):
            if not workspaces.exists(name):
                result.missing += [f"{name}/{r.key}" for r in records]
                continue
            with workspaces.shared():
                store = workspaces.open(name)
                try:
                    for record in records:
                        try:
                            stored = hashlib.sha256(store.get(record.key)).digest()
                        except KeyNotFound:
                            result.missing.append(f"{name}/{record.key}")
                            continue
                        if stored == hashlib.sha256(record.value).digest():
                            result.matched += 1
                        else:
                            result.different.append(f"{name}/{record.key}")
                finally:
                    store.close()
    finally:
        workspaces.close()
    return result


def cleanup(sources: Iterable[Path], data: SourceData) -> list[Path]:
    """After a passing validate, move the source files into the trash; return where.

    Raises:
        InvalidInput: (exit 2) validate does not pass; nothing is moved.
    """
    check = validate(data)
    if not check.ok:
        raise InvalidInput(f"validate does not pass ({check.summary()}): nothing moved")
    stamp = dt.datetime.now(dt.UTC).strftime(paths.TRASH_STAMP)
    target_dir = paths.make_private_dir(paths.trash_dir() / "sources")
    moved = []
    for source in sources:
        target = target_dir / f"{source.name}@{stamp}"
        if source.stat().st_dev == target_dir.stat().st_dev:
            os.replace(source, target)
        else:  # another disk: copy, then remove the source
            shutil.copy2(source, target)
            source.unlink()
        moved.append(target)
    return moved


# --- KyCLI -------------------------------------------------------------------------------
def kycli_sources(path: Path | None = None) -> list[tuple[Path, str]]:
    """The KyCLI files to import and their workspaces: ``~/kydata.db`` into ``default``
    and ``~/.kycli/data/<name>.db`` into ``<name>`` (or just ``path``: a file, which
    goes to ``default`` when it is named kydata.db and to its stem otherwise, or a
    directory of ``.db`` files)."""
    from kyfs.transfer.sources import workspace_for

    found: list[tuple[Path, str]] = []
    if path is None:
        legacy = paths.kycli_legacy_file()
        if legacy.is_file():
            found.append((legacy, "default"))
        directory = paths.kycli_data_dir()
        if directory.is_dir():
            found += [(p, workspace_for(p.stem)) for p in sorted(directory.glob("*.db"))]
        return found
    if path.is_dir():
        return [(p, workspace_for(p.stem)) for p in sorted(path.glob("*.db"))]
    return [(path, "default" if path.name == "kydata.db" else workspace_for(path.stem))]


def read_kycli_sources(sources: list[tuple[Path, str]], master_key: str | None) -> SourceData:
    """Read every KyCLI file of ``sources`` into one SourceData (history per workspace)."""
    merged = SourceData()
    for path, workspace in sources:
        data = read_kycli(path, workspace, master_key)
        merged.live += data.live
        merged.archived += data.archived
        merged.notes += data.notes
        merged.history += data.history
    return merged


def run_kycli(
    sources: list[tuple[Path, str]],
    master_key: str | None,
    merge: str | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> Plan:
    """Import KyCLI files: live keys, archive (expired keys too) and audit log as history.

    Raises:
        InvalidInput: (exit 2) no KyCLI data found, or unreadable.
        MasterKeyRequired: (exit 2) encrypted data without the key.
        WorkspaceExists: (exit 3) a target workspace exists and ``merge`` is None.
    """
    if not sources:
        raise InvalidInput("no KyCLI data found (~/kydata.db or ~/.kycli/data/*.db)")
    data = read_kycli_sources(sources, master_key)
    plan = None
    for workspace in sorted({w for _, w in sources}):
        part = SourceData(
            live=[r for r in data.live if r.workspace == workspace],
            archived=[(r, t) for r, t in data.archived if r.workspace == workspace],
            history=[h for h in data.history if h.workspace == workspace],
        )
        sub = run(part, str(workspace), merge=merge, concurrency=1, progress=progress)
        if plan is None:
            plan = Plan(", ".join(str(p) for p, _ in sources), notes=list(data.notes))
        plan.workspaces += sub.workspaces
    assert plan is not None
    return plan


def kycli_hint_needed(workspace_names: list[str]) -> bool:
    """True on a first run: kyfs has no workspaces yet and KyCLI data exists."""
    if workspace_names:
        return False
    try:
        return bool(kycli_sources())
    except (OSError, KyfsError):
        return False


@dataclass
class EngineCopy:
    """One workspace copied between engines: rows per table, and what validation found
    (``problems`` empty: every name, value, history row, archived entry and setting is
    equal, values by SHA-256)."""

    name: str
    rows: dict[str, int]
    problems: list[str]
    copied: bool = True  # False: it was in the target already, equal (a rerun)

    @property
    def ok(self) -> bool:
        """True when the copy validated."""
        return not self.problems


def migrate_engine(
    source_url: str | None, target_url: str | None, names: Iterable[str] = ()
) -> list[EngineCopy]:
    """Copy workspaces ``names`` (all when empty) from the engine at ``source_url`` to the
    one at ``target_url`` (kyfs.engine.open_engine_at: a PostgreSQL URL, or None/"sqlite"
    for this data directory's files), losslessly (kyfs.engine.sql.copy), then validate
    each copy against its source. The source is only read. A copy that fails validation
    is dropped into the target's trash, so a rerun starts clean. A workspace the target
    holds already with the same content (a run killed after copying it) is not copied
    again (``copied`` False), so a rerun finishes what a killed run began.

    Raises:
        InvalidInput: (exit 2) the same engine on both sides.
        WorkspaceNotFound: (exit 1) a name the source lacks.
        WorkspaceExists: (exit 3) the target holds a name with other content; nothing
            was copied.
        StorageError: (exit 4) either engine failed.
    """
    from kyfs.engine import open_engine_at
    from kyfs.engine.sql.copy import copy_workspace, differences, fingerprint

    if (source_url or "sqlite") == (target_url or "sqlite"):
        raise InvalidInput("--from and --to name the same engine")
    source = open_engine_at(source_url)
    try:
        target = open_engine_at(target_url)
        try:
            wanted = list(names) or source.names()
            for name in wanted:
                if not source.exists(name):
                    raise WorkspaceNotFound(f"workspace not found in --from: {name}")
            done, todo = [], []
            for name in wanted:  # one copied whole by an earlier run is done: a rerun
                if not target.exists(name):  # after a kill finishes the rest
                    todo.append(name)
                    continue
                with source.using(name) as src, target.using(name) as dst:
                    if differences(fingerprint(src), fingerprint(dst)):
                        raise WorkspaceExists(f"workspaces exist in --to: {name}")
                done.append(EngineCopy(name, {}, [], copied=False))
            # Every workspace is copied into a staged SQLite file first, then installed
            # in one step each (a rename, or one PostgreSQL transaction): killed before
            # the journal lists them, nothing shows in --to; after, the next kyfs command
            # installs the rest (kyfs.transfer.recovery).
            with journal.begin("engine-migrate", engine=target_url) as op:
                staging = open_engine_at(None, paths.make_private_dir(op.file("staged")))
                rows: dict[str, dict[str, int]] = {}
                try:
                    for name in todo:
                        staging.create(name)
                        with source.using(name) as src, staging.using(name) as dst:
                            rows[name] = copy_workspace(src, dst)
                finally:
                    staging.close()
                op.save(installs=[
                    {"workspace": n, "staged": str(staging.directory / f"{n}{paths.DB_SUFFIX}"),
                     "replace": False} for n in todo
                ])  # fmt: skip
                recovery.install(op, target)
            for name in todo:
                with source.using(name) as src, target.using(name) as dst:
                    problems = differences(fingerprint(src), fingerprint(dst))
                if problems:
                    target.drop(name)
                done.append(EngineCopy(name, rows[name], problems))
            return done
        finally:
            target.close()
    finally:
        source.close()
