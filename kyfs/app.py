"""The application: what the CLI and the mount share above the storage engine.

* which workspace a command acts on (:func:`resolve_workspace`: ``-w``/``KYFS_WORKSPACE``,
  else the user's active workspace, else ``default``; a cursor or ``--user`` has already
  chosen the data directory and the user through the environment);
* one ``with`` block per use of an engine or a workspace (:func:`engine_session`,
  :func:`session`), so no caller repeats "open the engine, take the lock, open the
  workspace, close both";
* policy built from the engine's primitives: the permanent ``shared`` workspace
  (:func:`ensure_shared`), a workspace per project directory (:func:`use_project`),
  and the archive retention the engine applies when it opens a workspace
  (kyfs.platform.config, read in kyfs.engine.open_engine).

Not thread-safe: each call opens what it uses and closes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from kyfs.core.errors import (
    InvalidInput,
    KyfsError,
    NoSpace,
    NotPermitted,
    ReadOnlyStorage,
    WorkspaceExists,
    WorkspaceNotFound,
)
from kyfs.core.names import IDENTITY_SEP, WORKSPACE_NAME_RE
from kyfs.engine import AnyEngine, open_engine
from kyfs.engine.base import Workspace
from kyfs.platform import config

if TYPE_CHECKING:
    from kyfs.engine.scoped import ScopedEngine
    from kyfs.platform.embedders import Embedder

log = logging.getLogger(__name__)


ENV_KYCLI_DB_PATH = "KYCLI_DB_PATH"  # KyCLI's database file, honoured as KyCLI does


def resolve_workspace(name: str | None) -> str:
    """The workspace a command acts on: ``name`` when given (-w, KYFS_WORKSPACE; even
    empty: it is validated when opened), else the workspace that ``kyfs migrate kycli``
    fills from the KyCLI file ``$KYCLI_DB_PATH`` (KyCLI gives that variable precedence
    over its active workspace: ``~/kydata.db`` is ``default``, ``NAME.db`` is NAME),
    else the active one (kyfs.platform.config), else ``default``."""
    if name is not None:
        return name
    kycli = os.environ.get(ENV_KYCLI_DB_PATH)
    if kycli:
        from kyfs.transfer.migrate import kycli_sources

        return kycli_sources(Path(kycli).expanduser())[0][1]
    return config.active_workspace() or config.DEFAULT_WORKSPACE


ENV_DB_PATH = "KYFS_DB_PATH"  # one workspace file for one command (KyCLI's KYCLI_DB_PATH)


def split_address(key: str, workspace: str | None, *, raw: bool = False) -> tuple[str, str | None]:
    """``(key, workspace)`` of a key argument by the one address rule
    (kyfs.core.address, docs/usage.md "Addresses"): ``--raw`` or a leading ``./`` take
    it as written; so does a workspace named otherwise (-w, KYFS_WORKSPACE, --db);
    ``KEY@WORKSPACE`` (skate's form) splits at the last ``@``; with ProntoDB's addresses
    on (config.address_style) ``PROJECT.NAMESPACE.KEY`` is key ``NAMESPACE.KEY`` of
    workspace PROJECT and ``USER.CURSOR.NAMESPACE.KEY`` key ``NAMESPACE.KEY`` of USER's
    cursor CURSOR. The workspace is ``workspace`` unchanged when the argument names none.

    ``user.name@project_alpha`` is key ``user.name`` of ``project_alpha``;
    ``./alice@example.com`` is key ``alice@example.com`` of the workspace in use.

    A cursor address acts as ``kyfs --user USER --cursor CURSOR`` for the rest of the
    command: it sets ``KYFS_USER``, ``KYFS_CURSOR`` and the data directory in the
    environment (the ``kyfs`` group puts them back when the command ends) and returns
    the cursor's workspace (``default`` when it has none).

    Raises:
        InvalidInput: (exit 2) a ProntoDB address of over four parts, a bad address
            style. InvalidName: (exit 2) USER or CURSOR. NotFound: (exit 1) no such cursor.
    """
    from kyfs.core.address import parse
    from kyfs.core.errors import NotFound

    named = workspace is not None or bool(os.environ.get(ENV_DB_PATH))
    style = "kyfs" if raw or named or key.startswith("./") else config.address_style()
    address = parse(key, raw=raw, named=named, style=style)
    if address.user is not None and address.cursor is not None:
        os.environ[config.ENV_USER] = address.user
        os.environ[config.ENV_CURSOR] = address.cursor
        try:
            config.apply_cursor()
        except NotFound:
            raise NotFound(
                f"no cursor {address.cursor} of user {address.user} (the address {key!r}"
                f" names one: kyfs --user {address.user} cursor list; for a key with dots"
                f" of its own write ./{key} or --raw)"
            ) from None
        return address.key, config.active_workspace() or config.DEFAULT_WORKSPACE
    return address.key, workspace if address.workspace is None else address.workspace


@contextlib.contextmanager
def engine_session(*, cache: bool = False) -> Iterator[ScopedEngine]:
    """The engine of the current data directory for one command, as the current identity
    sees it (kyfs.engine.scoped: its own workspaces, ``shared``, what was shared with
    it), closed afterwards. ``cache``: keep workspaces open between uses (the Python API's
    long-lived objects, ``kyfs watch``, which polls them; kyfs.engine.open_engine).

    Raises:
        InvalidName: (exit 2) a bad ``--user``. InvalidInput: (exit 2) grants.toml.
    """
    from kyfs.engine.scoped import ScopedEngine

    scope = config.current_scope()
    engine = open_engine(cache=cache)
    try:
        scoped = ScopedEngine(engine, scope)
        if not scoped.has_grants_file():
            adopt_old_identities(scoped)
        yield scoped
    finally:
        engine.close()


def adopt_old_identities(engine: ScopedEngine) -> int:
    """Once per data directory (until it has a grants.toml): keep what each identity used
    before identities came within its reach. Then every workspace was everyone's and
    ``--user NAME`` chose only the active one; now the workspaces made then are the main
    identity's. For each identity with state (``users/NAME.toml``) whose active
    workspace (or ``default``, when it had none) is one of those and that has no own
    workspace of that name, the main identity grants it read-write and its active
    workspace becomes ``MAIN~W``, with a log line. Writes grants.toml (the mark that it
    ran; none on an empty data directory); returns how many grants it gave. A data
    directory that cannot be written is left as it is (tried again next time), and so
    is a cursor's (the state files name the active workspaces of the data directory).
    """
    from kyfs.core.identity import Grant
    from kyfs.platform import paths

    if os.environ.get(paths.ENV_DATA):  # a cursor's data directory: state names the other's
        return 0
    below = engine.engine
    stored = set(below.names())
    if not stored:
        return 0
    main = config.main_identity()
    grants = list(config.load_grants())
    users = paths.config_dir() / "users"
    legacy = config.load().get("active_workspace")
    given = 0
    try:
        for file in sorted(users.glob("*.toml")) if users.is_dir() else []:
            name = file.stem
            if name == main or not WORKSPACE_NAME_RE.fullmatch(name):
                continue
            try:
                state = config.load(file)
            except InvalidInput:
                continue
            active = state.get("active_workspace", legacy) or config.DEFAULT_WORKSPACE
            if (
                not isinstance(active, str)
                or active not in stored
                or active == config.SHARED_WORKSPACE
                or f"{name}{IDENTITY_SEP}{active}" in stored
            ):
                continue
            grants.append(Grant(main, active, name))
            state["active_workspace"] = f"{main}{IDENTITY_SEP}{active}"
            config.save(state, file)
            log.warning(
                "identities: %s keeps using %s, now shared with it by %s", name, active, main
            )
            given += 1
        config.save_grants(grants)
    except OSError as exc:
        log.info("identities: cannot record the grants yet: %s", exc)
        return 0
    engine.refresh()
    return given


def _using(engine: AnyEngine, name: str) -> contextlib.AbstractContextManager[Workspace]:
    """``engine.using(name)``, typed as the Workspace interface whatever the engine."""
    return engine.using(name)


@contextlib.contextmanager
def session(
    name: str | None, *, addressed: bool = False, engine: ScopedEngine | None = None
) -> Iterator[tuple[str, Workspace]]:
    """The workspace a command acts on (:func:`resolve_workspace`), open under the shared
    workspaces lock for the ``with`` block; yields (its name, the workspace). ``default``
    is created on first use (KyCLI's rule), unless it was dropped: it waits in the trash.
    With ``$KYFS_DB_PATH`` (``kyfs --db FILE``) it is that workspace file instead, named
    by its stem; the file must be a kyfs workspace. ``addressed``: the name came from a
    ``KEY@WORKSPACE`` argument (:func:`split_address`), said in the not-found hint.
    ``engine``: an open :func:`engine_session` to use (the Python API keeps one; kyfs.api),
    else one is opened and closed with the block.

    Raises:
        WorkspaceNotFound: (ENOENT, exit 1) with a hint to create it, or the file of
            --db is missing.
        InvalidName: (exit 2). InvalidInput: (exit 2) both --db and -w.
        StorageError: (EIO, exit 4); UntrustedFile (exit 4) --db names a file that
            is not a kyfs workspace.
    """
    db_path = os.environ.get(ENV_DB_PATH)
    if db_path:
        if name is not None:
            raise InvalidInput("give either --db FILE (KYFS_DB_PATH) or -w NAME, not both")
        _refuse_own_files(Path(db_path))
        with _engine(engine) as scoped, scoped.using_file(Path(db_path)) as from_file:
            yield Path(db_path).stem, from_file
        return
    workspace = resolve_workspace(name)
    with _engine(engine) as engine, contextlib.ExitStack() as stack:
        opened: Workspace
        try:
            opened = stack.enter_context(_using(engine, workspace))
        except WorkspaceNotFound:
            dropped = any(t.name == workspace for t in engine.trash())
            if workspace == config.DEFAULT_WORKSPACE and not dropped:
                # The first command on a fresh data directory (kyfs set foo bar) just works.
                with contextlib.suppress(WorkspaceExists):
                    engine.create(workspace)
                opened = stack.enter_context(_using(engine, workspace))
            elif dropped:
                raise WorkspaceNotFound(
                    f"workspace not found: {workspace} (it is in the trash:"
                    f" kyfs trash restore {workspace})"
                ) from None
            elif IDENTITY_SEP in workspace:
                raise WorkspaceNotFound(
                    f"workspace not found: {workspace} (nobody shared it with you:"
                    " kyfs share NAME --with YOU, run as its owner)"
                ) from None
            elif addressed:
                raise WorkspaceNotFound(
                    f"workspace not found: {workspace} (the key's address names it, as"
                    " KEY@WORKSPACE does; for a key with '@' or dots of its own: ./KEY,"
                    " --raw or -w NAME)"
                ) from None
            else:
                raise WorkspaceNotFound(
                    f"workspace not found: {workspace} (create it with: kyfs use {workspace}"
                    " --create)"
                ) from None
        yield workspace, opened


def _engine(engine: ScopedEngine | None) -> contextlib.AbstractContextManager[ScopedEngine]:
    """``engine`` as it is (its owner closes it), or a new :func:`engine_session`."""
    return engine_session() if engine is None else contextlib.nullcontext(engine)


def _refuse_own_files(path: Path) -> None:
    """``--db FILE`` names a file outright, no identity's: a file of this data directory
    opened so would step around the identities' rules (kyfs.core.identity), so only the
    main identity may.

    Raises:
        NotPermitted: (EPERM, exit 6) another identity, and ``path`` in the data directory.
    """
    from kyfs.platform import paths

    scope = config.current_scope()
    if scope.is_main:
        return
    inside = paths.data_dir().resolve()
    if inside == path.resolve() or inside in path.resolve().parents:
        raise NotPermitted(
            f"{path} is a workspace of this data directory: name it with -w as {scope.identity}"
        )


def drop_workspace(engine: AnyEngine, name: str, *, only_if_empty: bool = False) -> Path | str:
    """Move workspace ``name`` to the trash; the ``shared`` workspace always exists.

    Raises:
        NotPermitted: (EPERM, exit 6) ``shared``. WorkspaceNotFound: (ENOENT, exit 1).
        NotEmpty: (ENOTEMPTY, exit 3) ``only_if_empty`` and it holds entries.
    """
    if name == config.SHARED_WORKSPACE:
        raise NotPermitted("the shared workspace always exists: delete its keys instead")
    return engine.drop(name, only_if_empty=only_if_empty)


def rename_workspace(engine: AnyEngine, old: str, new: str) -> None:
    """Rename workspace ``old`` to ``new``; every user whose active workspace was ``old``
    follows it. ``shared`` keeps its name.

    Raises:
        NotPermitted: (EPERM, exit 6) ``shared``. WorkspaceNotFound, WorkspaceExists.
    """
    if old == config.SHARED_WORKSPACE:
        raise NotPermitted("the shared workspace always exists under that name")
    engine.rename(old, new)
    if old != new:
        config.follow_rename(old, new)


def ensure_shared(engine: AnyEngine) -> None:
    """Create the ``shared`` workspace (knowledge across projects, contextd's shared
    database) if it is missing. On a full or read-only disk it is left for a later
    command: the command at hand (a delete that makes room) goes on without it."""
    if not engine.exists(config.SHARED_WORKSPACE):
        with contextlib.suppress(WorkspaceExists, NoSpace, ReadOnlyStorage):
            engine.create(config.SHARED_WORKSPACE)


def project_workspace(path: Path) -> str:
    """``project_<8 hex digits of SHA-256 of the absolute, resolved path>`` (contextd)."""
    import hashlib  # here: OpenSSL's import is 2.5 ms of every command's start

    resolved = str(path.expanduser().resolve())
    return "project_" + hashlib.sha256(resolved.encode()).hexdigest()[:8]


def use_project(engine: AnyEngine, path: Path) -> str:
    """The project workspace of directory ``path``, created (with the path recorded in its
    settings as ``project_path``) when missing; returns its name."""
    name = project_workspace(path)
    if not engine.exists(name):
        with contextlib.suppress(WorkspaceExists):
            engine.create(name)
    with engine.using(name) as workspace:
        if workspace.meta().get("project_path") is None:
            workspace.set_meta("project_path", str(path.expanduser().resolve()))
    return name


class _BackgroundThread:
    """A daemon thread running :meth:`_run` until :meth:`stop` (the daemon's helpers).

    Thread-safety: start and stop from one thread.
    """

    NAME = "kyfs-background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a daemon thread: it never keeps the process alive)."""
        self._thread = threading.Thread(target=self._run, name=self.NAME, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the thread and wait for its current step (at most a few seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


class Checkpointer(_BackgroundThread):
    """Folds the write-ahead logs of the workspaces the daemon holds open into their
    databases on a thread of its own, as PostgreSQL's checkpointer process does for its
    server: the daemon's own connections never checkpoint at commit
    (``open_engine(autocheckpoint=False)``), so no request waits for the copy and the
    fsync (kyfs.engine.sqlite.connection).

    Every INTERVAL seconds it folds each WAL that changed since (Engine.checkpoint): once
    the mount has had no request for QUIET seconds, and while requests keep coming at
    most every BUSY_EVERY seconds per workspace, so that a long ``tar x`` neither waits
    for checkpoints (each one fsyncs) nor grows the WAL without bound. Once the mount has
    rested REST seconds it also gives space back (free pages, the WAL cut to nothing).
    While the data directory's disk is tight (kyfs.platform.reserve.fold_limit) it folds
    at every look and has the daemon's connections fold as they commit past an eighth of
    the free space (``tighten``: SqliteEngine.tighten), so the WAL never holds more than
    a full disk could take into the databases. It uses its own engine: SQLite copies
    and fsyncs with the GIL released, beside the request threads.

    Args:
        names: the workspaces to look at (the daemon engine's ``cached``).
        idle_s: seconds since the mount's last request (Metrics.idle_s).
        tighten: the daemon engine's SqliteEngine.tighten (None: nothing to tighten).
    """

    NAME = "kyfs-checkpointer"
    INTERVAL = 0.25  # seconds between two looks
    QUIET = 0.5  # seconds without a request that count as a pause of the mount
    REST = 2.0  # seconds without a request after which space goes back (Engine.checkpoint)
    BUSY_EVERY = 5.0  # seconds between two folds of one workspace while requests come

    def __init__(
        self,
        names: Callable[[], list[str]],
        idle_s: Callable[[], float],
        tighten: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self._names = names
        self._idle_s = idle_s
        self._tighten = tighten

    def _run(self) -> None:
        engine = open_engine()
        folded: dict[str, float] = {}  # name -> when it was last folded (monotonic s)
        started = time.monotonic()
        try:
            while not self._stop.wait(self.INTERVAL):
                now = time.monotonic()
                names = self._names()
                idle = self._idle_s()
                limit = engine.fold_limit(self._names())
                if self._tighten is not None:
                    self._tighten(limit)
                if idle < self.QUIET and not limit:  # busy: those not folded for a while
                    names = [n for n in names if now - folded.get(n, started) >= self.BUSY_EVERY]
                for name in engine.checkpoint(names, idle=idle >= self.REST):
                    folded[name] = now
        finally:
            engine.close()


def keep_undo_under(engine: AnyEngine, cap: int, now_ns: int | None = None) -> int:
    """Keep undo data (history versions, archived entries, trashed workspaces) under
    ``cap`` bytes in all, as ``kyfs du`` counts them: when they pass it, release the
    oldest first (versions and archived entries by when they were made, trashed
    workspaces by when they were dropped), in steps of a sixteenth of the time since the
    oldest, until they fit. Undo data is a cache, not a burden (issue 24): the cap wins
    over the history retention and the archive's days. Returns how many bytes went.

    Raises:
        StorageError: (EIO, exit 4) a workspace could not be read or changed.
    """
    now = now_ns or time.time_ns()

    def measure() -> tuple[dict[str, int], int]:
        held = {}
        for name in engine.names():
            with engine.using(name) as workspace:
                usage = workspace.usage()
            held[name] = usage.history + usage.archive
        return held, sum(held.values()) + sum(t.size for t in engine.trash())

    held, total = measure()
    if total <= cap:
        return 0
    first = total
    times = [int(t.dropped.timestamp() * 1e9) for t in engine.trash()]
    for name, size in held.items():
        if size:
            with engine.using(name) as workspace:
                oldest = workspace.oldest_undo_ns()
            if oldest is not None:
                times.append(oldest)
    oldest = min(times, default=now)
    for step in range(1, 17):
        cutoff = oldest + (now - oldest) * step // 16
        for name, size in held.items():
            if size:
                with engine.using(name) as workspace:
                    workspace.release_undo(cutoff)
        engine.empty_trash(older_than_s=max(0.0, (now - cutoff) / 1e9))
        held, total = measure()
        if total <= cap:
            break
    log.warning("undo data over its cap of %d bytes: released %d bytes, oldest first",
                cap, first - total)  # fmt: skip
    return first - total


class Upkeep(_BackgroundThread):
    """The daemon's care of its storage, on a thread and an engine of its own, every
    INTERVAL seconds:

    * the disk-full reserve (kyfs.platform.reserve) is made again once there is room;
    * while the disk is short of space (the reserve given up), every undo data goes,
      oldest first: the trash, then each workspace's archive and versions (a commit that
      meets a full disk already releases its own workspace's; the Checkpointer gives the
      freed pages back to the file system at the next pause);
    * otherwise undo data is kept under its cap (:func:`keep_undo_under`,
      kyfs.platform.config.undo_cap_bytes), looked at UNDO_EVERY seconds after a change;
    * every workspace's history is thinned to its retention every THIN_EVERY seconds
      (keys that are written are thinned as they are).

    A failure is logged and tried again at the next round.
    """

    NAME = "kyfs-upkeep"
    INTERVAL = 5.0  # seconds between two rounds
    UNDO_EVERY = 60.0  # seconds between two looks at the undo cap
    THIN_EVERY = 3600.0  # seconds between two thinnings of every workspace's history

    def _run(self) -> None:
        engine = open_engine()
        directory = getattr(engine, "directory", None)  # SQLite: the workspaces' folder
        data = None if directory is None else directory.parent
        last_undo = last_thin = time.monotonic()
        seen: object = None
        try:
            while not self._stop.wait(self.INTERVAL):
                now = time.monotonic()
                try:
                    if engine.short():
                        self._release_everything(engine)
                        engine.ensure_reserve()
                        continue
                    if now - last_undo >= self.UNDO_EVERY:
                        last_undo = now
                        state = _files_state(data)
                        if state is None or state != seen:
                            keep_undo_under(engine, config.undo_cap_bytes(data))
                            seen = _files_state(data)
                    if now - last_thin >= self.THIN_EVERY:
                        last_thin = now
                        for name in engine.names():
                            with engine.using(name) as workspace:
                                workspace.thin_history(time.time_ns())
                except KyfsError as exc:
                    log.warning("storage upkeep: %s", exc)
                except Exception:  # a bug, or a foreign error: the thread must live on
                    _log_once_a_minute("storage upkeep")
        finally:
            engine.close()

    @staticmethod
    def _release_everything(engine: AnyEngine) -> None:
        """A disk short of space: the trash, then every workspace's undo data, go."""
        if engine.empty_trash():
            log.warning("the disk is full: emptied the trash")
        for name in engine.names():
            with engine.using(name) as workspace:
                if workspace.release_undo():
                    log.warning("the disk is full: released the undo data of %s", name)


_LOGGED: dict[str, float] = {}  # what a background thread failed at -> when it was logged


def _log_once_a_minute(what: str) -> None:
    """Log the exception being handled, with its traceback, at most once a minute per
    ``what`` (a background thread that meets a bug every pass must not flood the log)."""
    now = time.monotonic()
    if now - _LOGGED.get(what, -60.0) >= 60.0:
        _LOGGED[what] = now
        log.exception("%s failed (the thread goes on)", what)


def _files_state(data: Path | None) -> tuple[tuple[str, int, int], ...] | None:
    """(name, mtime ns, size) of every file of a data directory's workspaces and trash,
    so that the undo cap is looked at only after a change; None for no data directory
    (PostgreSQL: looked at every time)."""
    if data is None:
        return None
    found = []
    for folder in (data / "workspaces", data / "trash"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                info = entry.stat(follow_symlinks=False)
                found.append((entry.path, info.st_mtime_ns, info.st_size))
    return tuple(sorted(found))


def catch_up(
    workspace: Workspace, embedder: Embedder, keep: bool = True, batches: int | None = None
) -> int:
    """Embed what is pending in ``workspace`` (batches of kyfs.platform.embedders.BATCH,
    each stored in one transaction); with ``keep``, first make it keep embeddings by
    ``embedder`` (all of its keys pending when it kept none, or another model's).
    Returns how many nodes were done; at most ``batches`` batches when given (the
    daemon's indexer, which yields between them). A workspace that cannot be written (a
    read-only grant, a read-only disk) is searched with the embeddings it has.
    """
    from kyfs.platform import embedders

    try:
        if keep:
            workspace.keep_embeddings(embedder.name, embedder.dim)
        space = workspace.vector_space()
        if space is None or space.model != embedder.name:
            return 0
        done = 0
        rounds = 0
        while (batches is None or rounds < batches) and (
            pending := workspace.pending_embeddings(embedders.BATCH)
        ):
            rounds += 1
            texts = [text for _, _, text in pending if text is not None]
            made = iter(embedder.embed(texts)) if texts else iter(())
            rows = [
                (node, mark, None if text is None else next(made)) for node, mark, text in pending
            ]
            stored = workspace.store_embeddings(embedder.name, rows)
            done += stored
            if stored == 0:  # another process changed the model meanwhile
                break
        return done
    except (ReadOnlyStorage, NotPermitted):
        return 0


class BackgroundIndexer(_BackgroundThread):
    """Catches every workspace's search index up with its writes on a thread of its own,
    so the FUSE loop never tokenizes (the daemon runs one; searches also drain what is
    pending first, so none depends on it for correctness).

    Every INTERVAL seconds it takes each workspace in turn and writes the index rows of
    up to BATCH pending nodes per transaction until none is left; in a workspace that
    keeps embeddings (kyfs.search.semantic) it then embeds what is pending, a batch at a
    time (:func:`catch_up`), loading the embedder the first time one is needed.
    It uses its own engine
    (its own SQLite connections and lock descriptor), so SQLite's locking, not Python's,
    orders it against the daemon's writes; FTS5's tokenizing runs in C with the GIL
    released, beside the FUSE thread.

    With ``idle_s`` (seconds since the mount's last request) it yields to the mount, as
    background work does under ionice's idle class: while requests keep coming it waits
    until they pause for QUIET seconds, but never longer than MAX_WAIT seconds. A `tar x`
    then runs without it competing for the GIL, and a file removed before it was indexed
    (`rm -rf` of a fresh tree, temporary files) costs no FTS5 work at all: measured on
    the bench tree, tar x 5.69 -> 4.90 s and rm -rf 1.34 -> 0.85 s.

    Thread-safety: start and stop from one thread.
    """

    NAME = "kyfs-indexer"
    INTERVAL = 0.5  # seconds between two passes
    BATCH = 256  # nodes indexed per transaction (bounds how long a writer may wait)
    QUIET = 0.5  # seconds without a request that count as a pause of the mount
    MAX_WAIT = 10.0  # seconds the index may wait for a pause at most

    def __init__(self, idle_s: Callable[[], float] | None = None) -> None:
        super().__init__()
        self._idle_s = idle_s
        self._waiting_since: float | None = None

    def _yields(self) -> bool:
        """True while the mount is busy and the index has waited less than MAX_WAIT."""
        if self._idle_s is None or self._idle_s() >= self.QUIET:
            self._waiting_since = None
            return False
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        return now - self._waiting_since < self.MAX_WAIT

    def _run(self) -> None:
        engine = open_engine()
        try:
            while not self._stop.wait(self.INTERVAL):
                if self._yields():
                    continue
                try:
                    names = engine.names()
                except KyfsError as exc:  # the server away, the directory gone: next pass
                    log.debug("indexing: cannot list the workspaces: %s", exc)
                    continue
                for name in names:
                    try:
                        while not self._stop.is_set() and not self._yields():
                            with engine.using(name) as workspace:
                                if workspace.flush_index(self.BATCH) < self.BATCH:
                                    self._embed(workspace)
                                    break
                    except KyfsError as exc:  # dropped meanwhile, untrusted, busy: next pass
                        log.debug("indexing %s: %s", name, exc)
                    except Exception:  # a bug, or a foreign error: the thread lives on
                        _log_once_a_minute(f"indexing {name}")
                self._waiting_since = None  # a pass ran: the next wait starts afresh
        finally:
            engine.close()

    def _embed(self, workspace: Workspace) -> None:
        """Embed what is pending in ``workspace`` while the mount lets it."""
        if workspace.vector_space() is None or not workspace.count_pending_embeddings():
            return
        from kyfs.platform import embedders

        embedder = embedders.load()
        while not self._stop.is_set() and not self._yields():
            if not catch_up(workspace, embedder, keep=False, batches=1):
                return


def identities(engine: AnyEngine) -> list[dict[str, object]]:
    """The registry of identities (``kyfs users``): the main identity, every identity that
    holds a workspace or has state (``users/NAME.toml``), each with ``name``, ``main``
    (bool), ``workspaces`` (its own, as it names them, sorted), ``granted`` (what was
    shared with it, as ``OWNER~W``, with ``read_only``). Names only, never contents.

    Raises:
        StorageError: (EIO, exit 4) the engine cannot list its workspaces.
    """
    from kyfs.core.identity import Scope
    from kyfs.platform import paths

    main = config.main_identity()
    below = getattr(engine, "engine", engine)  # every identity's names: the engine below
    grants = config.load_grants()
    owned: dict[str, list[str]] = {main: []}
    for stored in below.names():
        owner, name = Scope(main, main).owner_of(stored)
        if stored != config.SHARED_WORKSPACE:
            owned.setdefault(owner, []).append(name)
    users = paths.config_dir() / "users"
    for state in sorted(users.glob("*.toml")) if users.is_dir() else []:
        if WORKSPACE_NAME_RE.fullmatch(state.stem):
            owned.setdefault(state.stem, [])
    return [
        {
            "name": name,
            "main": name == main,
            "workspaces": sorted(owned[name]),
            "granted": [
                {"workspace": f"{g.owner}~{g.workspace}", "read_only": g.read_only}
                for g in grants
                if g.grantee == name
            ],
        }
        for name in sorted(owned)
    ]


def require_main(what: str) -> None:
    """Refuse ``what`` (an operation on the whole data directory: backup, engine
    migration) to any identity but the main one (kyfs.core.identity).

    Raises:
        NotPermitted: (EPERM, exit 6) under ``--user`` of another identity.
    """
    scope = config.current_scope()
    if not scope.is_main:
        raise NotPermitted(
            f"{what} covers every identity's workspaces: run it as {scope.main} (without --user)"
        )
