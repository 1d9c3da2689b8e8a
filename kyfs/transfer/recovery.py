"""Finishing or undoing what kyfs commands killed midway left behind, from their journals
(kyfs.platform.journal). Every kyfs command runs :func:`recover` before its work (the
CLI group; the daemon starts through it too), so the next command after a kill puts
things right, with a log line (on stderr for a command, in the log for the daemon).

The multi-step operations, and what a kill leaves:

=================  ===============================  =====================================
operation          killed before its commit point   killed after it
=================  ===============================  =====================================
backup create      snapshots and ``FILE.partial``   (none: the commit is one rename)
                   are deleted
backup restore,    the staged copies are deleted;   the staged workspaces are installed
migrate run,       nothing was installed            (:func:`install`), as the command
migrate engine                                      would have: all of them, each whole
drop, rename,      (kyfs.engine.sqlite.engine       the moves are finished
salvage            .SqliteEngine.finish_moves)
=================  ===============================  =====================================

The commit point of an installing operation is the journal save that lists what to
install: every workspace is staged (copied, checked, validated) before it, so rolling
forward needs nothing but the staged files and the engine. Each install is one atomic
step per workspace (a rename, or one PostgreSQL transaction), so every workspace is,
at any moment, either as it was or as the operation makes it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kyfs.core.errors import KyfsError
from kyfs.platform import journal, paths

log = logging.getLogger(__name__)

INSTALLING = ("restore", "migrate", "engine-migrate", "fork")  # journal kinds that install
SPILL_AGE_S = 3600.0  # seconds a named file in the spill folder lies untouched before it goes
KINDS = ("backup-create", "backup-verify", *INSTALLING)  # what recover() handles ("move":
# the SQLite engine's, when it opens)


def install(op: journal.Operation, workspaces: Any) -> list[str]:
    """Install the staged workspaces listed in ``op``'s journal into ``workspaces`` (an
    engine), and its staged settings files: each item ``{"workspace": NAME, "staged":
    FILE, "replace": bool}`` not done yet. An existing workspace of that name is dropped
    first (to the trash) when the item replaces, or when it is this operation's own
    half-made copy (``adopting``); otherwise it is left alone and the item is skipped.
    Idempotent: run again after being cut short, it does only what is left. Returns the
    names installed.

    Raises:
        KyfsError: the engine failed (StorageError, NoSpace); what is done stays done.
    """
    items: list[dict[str, Any]] = op.data.get("installs", [])
    done = []
    for item in items:
        staged, name = Path(item["staged"]), item["workspace"]
        if item.get("done") or not staged.exists():
            continue
        ours = op.data.get("adopting") == name
        if workspaces.exists(name):
            if not (item.get("replace") or ours):
                log.warning("not installed: workspace %s was made meanwhile", name)
                continue
            workspaces.drop(name)  # to the trash: kyfs trash restore brings it back
        op.save(adopting=name)
        workspaces.adopt(name, staged)
        item["done"] = True
        op.save(installs=items, adopting=None)
        for part in (staged, *paths.sidecar_files(staged)):
            part.unlink(missing_ok=True)
        done.append(name)
    for source_name, target_name in op.data.get("state", []):
        source, target = Path(source_name), Path(target_name)
        if not source.exists():
            continue  # done before
        paths.make_private_dir(target.parent)
        partial = target.with_name(target.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(source.read_bytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
        source.unlink()
    return done


def recover() -> list[str]:
    """Finish or undo the operations of killed kyfs processes in this data directory
    (see the module docstring); return one sentence per operation, each also logged.
    An operation whose engine cannot be reached now is left for a later command.
    Cheap when there is nothing to do (one scandir)."""
    said = []
    for op in journal.dead(kinds=KINDS):
        try:
            sentence = _recover(op)
        except (KyfsError, OSError) as exc:
            op.release()  # tried again by a later command
            sentence = f"could not finish an interrupted {op.kind} yet: {exc}"
        else:
            op.close()
        log.info("%s", sentence)  # the daemon's log; a command says it on stderr
        said.append(sentence)
    return said


def sweep_spill(older_than_s: float = SPILL_AGE_S) -> list[str]:
    """Remove named leftovers from the spill folder (kyfs.platform.paths.spill_dir):
    open files spill into unnamed files (O_TMPFILE), so a named entry there is a copy
    an older kyfs's killed backup or restore left (they work under ``ops/`` now); only
    entries untouched for ``older_than_s`` seconds go. Returns one sentence, or none."""
    import shutil
    import time

    removed, size = 0, 0
    try:
        entries = list(os.scandir(paths.spill_dir()))
    except OSError:
        return []
    for entry in entries:
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < older_than_s:
                continue
            if entry.is_dir(follow_symlinks=False):
                size += journal.size(Path(entry.path))
                shutil.rmtree(entry.path)
            else:
                size += entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
            removed += 1
        except OSError:
            continue
    if not removed:
        return []
    sentence = (
        f"removed {removed} leftovers ({size} bytes) of killed operations from {paths.spill_dir()}"
    )
    log.info("%s", sentence)
    return [sentence]


def _recover(op: journal.Operation) -> str:
    size = journal.size(op.folder)
    if op.kind == "backup-create":
        partial = op.data.get("partial")
        if partial:
            Path(partial).unlink(missing_ok=True)
        return f"removed what a killed backup create left ({size} bytes, {partial})"
    if op.kind in INSTALLING and op.data.get("installs"):
        from kyfs.engine import open_engine_at

        workspaces = open_engine_at(op.data.get("engine"))
        try:
            done = install(op, workspaces)
        finally:
            workspaces.close()
        what = ", ".join(done) or "nothing left to do"
        return f"finished the {op.kind} that was killed: installed {what}"
    return f"undid a killed {op.kind}: removed {size} bytes of staged files"
