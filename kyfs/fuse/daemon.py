"""Mount and unmount: the daemon in the foreground or background, readiness, stale mounts.

* :func:`serve` runs the FUSE loop in this process until unmounted (``--foreground``).
* :func:`mount` starts ``python -m kyfs mount --foreground`` as a background
  daemon (its own session, output to kyfs.platform.paths.mount_log()), waits until the
  mountpoint is mounted, and fails fast with the daemon's last log lines if it
  died first.
* :func:`unmount` tries ``fusermount3 -u``, ``fusermount -u``, then ``umount``
  (``-z``/``-l`` with ``lazy``), then waits for the daemon to exit.
* A stale mountpoint (the daemon died; stat says ENOTCONN, "Transport endpoint
  is not connected") is unmounted before mounting again.

The daemon writes a JSON record (pid, mountpoint, data directory, start time
in UTC seconds) to kyfs.platform.paths.mount_record() while it runs.

Not thread-safe; call from the main thread.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kyfs import __version__
from kyfs.core.errors import KyfsError, MountError
from kyfs.fuse.invalidate import ATTR_TIMEOUT
from kyfs.platform import config, paths

log = logging.getLogger(__name__)

READY_TIMEOUT = 15.0  # seconds to wait for a background daemon's mount
EXIT_TIMEOUT = 15.0  # seconds to wait for the daemon to exit after unmount
BASE_OPTIONS: dict[str, Any] = {
    "fsname": "kyfs",
    "subtype": "kyfs",
    # No hard_remove: libfuse renames a file unlinked while open to a .fuse_hidden name,
    # which the adapter never stores (the key is deleted at once) but keeps answering
    # for, so fstat(2) of such a file works (with hard_remove libfuse answers ESTALE).
    # The kernel checks permission bits (EACCES), as on a local filesystem.
    "default_permissions": True,
    # The kernel may keep names and attributes for 30 s (a warm `cat` of a tree then
    # costs open, flush and release per file; lookups and getattrs are answered from its
    # caches). Changes made behind the mount (CLI, another daemon, TTL expiry) are
    # invalidated within about 0.25 s by kyfs.fuse.invalidate.ChangeWatcher.
    "attr_timeout": ATTR_TIMEOUT,
    "entry_timeout": ATTR_TIMEOUT,
    # st_ino is the node's own number (Workspace.inode), stable across remounts and
    # renames and shared by hard links, instead of libfuse's per-path numbering.
    "use_ino": True,
    # At open, libfuse compares the file's mtime and size with what the kernel has
    # cached and keeps the page cache when they did not change (a change by the CLI
    # changes mtime, so it is seen at the next open).
    "auto_cache": True,
}


def parse_options(text: str | None) -> dict[str, Any]:
    """Parse mount(8) ``-o`` syntax.

    ``"allow_other,uid=1000"`` -> ``{"allow_other": True, "uid": "1000"}``.
    """
    options: dict[str, Any] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        options[key] = value if sep else True
    return options


def is_mounted(mountpoint: Path) -> bool:
    """True when something is mounted at ``mountpoint`` (stale mounts included)."""
    return _listed_mount(mountpoint) or is_stale(mountpoint)


def is_stale(mountpoint: Path) -> bool:
    """True when ``mountpoint`` is a FUSE mount whose daemon is gone.

    Right after a daemon dies the kernel still answers stat(2) from cached attributes
    (for up to attr_timeout), so stat alone misses it. Two signs that do not wait: the
    daemon recorded for this mountpoint (kyfs.platform.paths.mount_record) no longer
    runs, or statvfs(2), which the kernel always asks the daemon, fails with ENOTCONN
    ("Transport endpoint is not connected").
    """
    try:
        os.stat(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    if not _listed_mount(mountpoint):
        return False
    record = read_record(mountpoint)
    pid = record.get("pid") if record else None
    if isinstance(pid, int) and not _pid_alive(pid):
        return True
    try:
        os.statvfs(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _listed_mount(mountpoint: Path) -> bool:
    """True when ``mountpoint`` is a mount point in /proc/self/mountinfo (proc(5)); unlike
    os.path.ismount this never asks the filesystem itself."""
    target = str(mountpoint.absolute())
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return os.path.ismount(mountpoint)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4 and _unescape(fields[4]) == target:
            return True
    return False


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _unmount_commands(mountpoint: Path, lazy: bool) -> list[list[str]]:
    target = str(mountpoint)
    commands = []
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            commands.append([tool, "-u", *(["-z"] if lazy else []), target])
    if shutil.which("umount"):
        commands.append(["umount", *(["-l"] if lazy else []), target])
    return commands


def read_record(mountpoint: Path) -> dict[str, Any] | None:
    """The running daemon's record for ``mountpoint``, or None."""
    try:
        data = json.loads(paths.mount_record(mountpoint).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def running_mounts() -> list[Path]:
    """The mountpoints that daemons of this data directory serve (or served and died
    on: stale), from their records (kyfs.platform.paths.mount_record), the default
    mountpoint first."""
    found = []
    here = str(paths.data_dir())
    for file in paths.mount_records():
        try:
            record = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("data_dir") != here:
            continue
        mountpoint = Path(str(record.get("mountpoint", "")))
        pid = record.get("pid")
        if not mountpoint.is_absolute() or paths.mount_record(mountpoint) != file:
            continue  # not a record kyfs wrote for that mountpoint
        if (isinstance(pid, int) and _pid_alive(pid)) or is_mounted(mountpoint):
            found.append(mountpoint)
    default = paths.default_mountpoint().expanduser().absolute()
    return sorted(found, key=lambda m: (m != default, str(m)))


def _pid_alive(pid: int) -> bool:
    """True when process ``pid`` runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux proc(5): the state letter follows the command name in parentheses
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def unmount(mountpoint: Path, lazy: bool = False) -> None:
    """Unmount ``mountpoint`` and wait up to EXIT_TIMEOUT s for its daemon to exit.

    Raises:
        MountError: (exit 5) nothing is mounted there, or every unmount command failed
            (the message carries the last command's error, e.g. "Device or resource busy").
    """
    mountpoint = mountpoint.absolute()
    if not is_mounted(mountpoint):
        raise MountError(f"not mounted: {mountpoint}")
    record = read_record(mountpoint)
    errors = []
    for command in _unmount_commands(mountpoint, lazy):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            break
        errors.append(f"{command[0]}: {done.stderr.strip() or done.returncode}")
    else:
        raise MountError(f"cannot unmount {mountpoint}: " + "; ".join(errors))
    if record and isinstance(record.get("pid"), int):
        deadline = time.monotonic() + EXIT_TIMEOUT
        while _pid_alive(record["pid"]) and time.monotonic() < deadline:
            _reap(record["pid"])
            time.sleep(0.05)
    paths.mount_record(mountpoint).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def prepare_mountpoint(mountpoint: Path) -> None:
    """Make ``mountpoint`` ready: recover a stale mount, create the directory.

    Raises:
        MountError: (exit 5) already mounted, or not a directory.
    """
    if is_stale(mountpoint):
        log.warning("recovering stale mount at %s", mountpoint)
        unmount(mountpoint, lazy=True)
    if _listed_mount(mountpoint):
        raise MountError(f"already mounted: {mountpoint}")
    if mountpoint.exists() and not mountpoint.is_dir():
        raise MountError(f"mountpoint is not a directory: {mountpoint}")
    try:
        mountpoint.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MountError(f"cannot make the mountpoint {mountpoint}: {exc.strerror}") from None


def serve(
    mountpoint: Path,
    options: dict[str, Any] | None = None,
    metrics_port: int | None = None,
    xattrs: bool = True,
) -> None:
    """Mount and serve in this process until unmounted or signalled (SIGINT/SIGTERM).

    Requests are served on libfuse's threads (its multi-threaded loop), so a workspace
    waiting on another process's lock holds up only its own requests; ``nothreads`` in
    ``options`` serves one at a time. Under systemd, READY=1 is sent once the mount
    answers (kyfs.platform.service). With ``metrics_port`` the metrics are also served
    at http://127.0.0.1:PORT/metrics.
    Without ``xattrs`` the extended-attribute handlers are not registered: the kernel
    then stops asking (ENOSYS), which saves the getxattr round trip that ``ls -l``
    makes twice per file and every first write once (security.capability).

    Raises:
        MountError: (exit 5) libfuse could not mount (see the log for its message).
        InvalidInput: (exit 2) ``metrics_port`` without prometheus_client.
    """
    from kyfs.app import BackgroundIndexer, Checkpointer, Upkeep
    from kyfs.core.actor import set_actor
    from kyfs.engine import open_engine
    from kyfs.engine.scoped import ScopedEngine
    from kyfs.fuse.adapter import KyfsOperations
    from kyfs.fuse.binding import request_actor
    from kyfs.platform import service
    from kyfs.platform.metrics import Metrics, serve_http
    from kyfs.vfs import openfile

    mountpoint = mountpoint.absolute()
    # A reader gone from a pipe or socket is one request's error (EPIPE), never the end of
    # the daemon: SIGPIPE stays ignored (the CLI group handles it for its commands).
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    prepare_mountpoint(mountpoint)
    metrics = Metrics()
    if metrics_port is not None:
        serve_http(metrics, metrics_port)
    openfile.BUDGET.limit = config.write_buffer_bytes()  # what open files keep in memory
    scope = config.current_scope()  # whose workspaces the mount shows (kyfs --user NAME)
    set_actor(functools.partial(request_actor, config.current_user()))  # history's who
    engine = open_engine(cache=True, autocheckpoint=False)  # Checkpointer folds the WAL in
    try:  # a workspace file copied in with cp carries another's inode tag: st_ino collide
        for change in engine.settle_tags():
            log.warning("%s", change)
    except (KyfsError, OSError) as exc:  # (a read-only data directory)
        log.warning("cannot settle the workspaces' inode tags: %s", exc)
    only = os.environ.get(config.ENV_MOUNT_WORKSPACE) or None  # kyfs -w NAME mount
    operations = KyfsOperations(ScopedEngine(engine, scope, only=only), metrics=metrics)
    # mountinfo lists the resolved path (no symlinks, no ..): resolved before mounting
    listed_as = Path(os.path.realpath(mountpoint))
    operations.invalidator.mounted = functools.partial(_listed_mount, listed_as)
    if not xattrs:  # mfusepy registers only the handlers that are not None
        for name in ("getxattr", "setxattr", "listxattr", "removexattr"):
            setattr(operations, name, None)
    record = paths.mount_record(mountpoint)
    paths.make_private_dir(record.parent)
    log_to = service.log_file()
    record.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "mountpoint": str(mountpoint),
                "data_dir": str(paths.data_dir()),
                "started": time.time(),
                "log_file": None if log_to is None else str(log_to),
            }
        )
    )
    settings = {**BASE_OPTIONS, **(options or {})}
    # libfuse's multi-threaded loop unless -o nothreads (one request at a time, as the
    # first version served; kept to measure the difference, see bench/real_trees.py).
    nothreads = bool(settings.pop("nothreads", False))
    service.announce_when_mounted(mountpoint)
    log.info("kyfs %s serving %s from %s", __version__, mountpoint, paths.data_dir())
    indexer = BackgroundIndexer(idle_s=metrics.idle_s)  # yields while requests come
    indexer.start()  # before the pinning below: its FTS5 work may use another CPU
    # SQLite files only: a PostgreSQL server checkpoints itself (Engine.checkpoint).
    checkpointer = Checkpointer(engine.cached, metrics.idle_s, getattr(engine, "tighten", None))
    if config.engine_url() is None:
        checkpointer.start()  # likewise: its copies and fsyncs may use another CPU
    upkeep = Upkeep()  # the reserve, the undo cap, history thinning
    upkeep.start()
    if not nothreads:
        pin_to_one_cpu()
        limit_malloc_arenas()
    try:
        fuse_class = _fuse_class()
        fuse_class(operations, str(mountpoint), foreground=True, nothreads=nothreads, **settings)
    except RuntimeError as exc:
        raise MountError(f"cannot mount {mountpoint}: libfuse error {exc}") from None
    finally:
        upkeep.stop()
        checkpointer.stop()
        indexer.stop()
        record.unlink(missing_ok=True)


def pin_to_one_cpu() -> int | None:
    """Keep this thread, and the threads it starts from now on (libfuse's request
    threads), on one of the CPUs it may use; returns that CPU, or None when it has one
    only or the system refuses (sched_setaffinity(2)).

    Only the thread holding CPython's GIL runs Python, and every SQLite call or system
    call hands the GIL on. Across CPUs each hand-over is a cross-CPU wake-up: measured on
    2 CPUs, four `cat` processes on four workspaces made the threaded daemon spend 4.3 s
    of CPU (150,000 context switches) where the single-threaded loop spent 1.1 s; pinned
    to one CPU, 1.5 s. Daemons of several mounts spread over the CPUs by their pid."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None
        cpu = cpus[os.getpid() % len(cpus)]
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return cpu


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (mallopt(3) M_ARENA_MAX) before libfuse starts its
    threads: by default each thread that allocates gets an arena of its own and keeps
    what it freed, so the threaded daemon's peak RSS over three 1 GiB writes and reads
    rose to 84 MiB, against 67 MiB with two arenas. Returns False where there is no
    glibc mallopt."""
    import ctypes

    m_arena_max = -8  # glibc's malloc.h
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(m_arena_max, arenas))


def mount(
    mountpoint: Path,
    options_text: str | None = None,
    verbosity: int = 0,
    metrics_port: int | None = None,
    xattrs: bool = True,
) -> int:
    """Start a background daemon serving ``mountpoint``; return its pid once mounted.

    Raises:
        MountError: (exit 5) the daemon died or did not mount within READY_TIMEOUT s;
            the message includes the end of its log.
    """
    mountpoint = mountpoint.absolute()
    prepare_mountpoint(mountpoint)
    log_file = paths.mount_log(mountpoint)
    paths.make_private_dir(log_file.parent)
    command = [sys.executable, "-m", "kyfs", "mount", "--foreground", str(mountpoint)]
    if options_text:
        command += ["-o", options_text]
    command += ["-v"] * verbosity
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    if not xattrs:
        command.append("--no-xattr")
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MountError(
                f"the kyfs daemon exited with status {process.returncode} before mounting:\n"
                + _tail(log_file)
            )
        if os.path.ismount(mountpoint):
            return process.pid
        time.sleep(0.05)
    process.terminate()
    raise MountError(
        f"{mountpoint} was not mounted after {READY_TIMEOUT:.0f} s:\n" + _tail(log_file)
    )


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ctypes runs a callback on a thread Python did not start (libfuse's request threads)
# under PyGILState_Ensure/Release, which creates a Python thread state for the call and
# destroys it after. Holding one more PyGILState_Ensure per thread keeps the state (and
# its threading.local data) from one callback to the next: four `cat` processes on four
# workspaces took 1.49x the single-threaded loop's time without it, 1.05x with it
# (55,000 -> 37,000 context switches, pinned). libfuse 3.12+ keeps its threads (at most 10 by
# default), so this keeps at most that many states.
_KEPT = threading.local()
READDIR_PLUS = 1 << 0  # libfuse's fuse_readdir_flags: the kernel asks for attributes too
FILL_DIR_PLUS = 1 << 1  # libfuse's fuse_fill_dir_flags: this entry carries them all


def _fuse_class() -> type:
    import ctypes

    from kyfs.fuse.binding import FUSE, c_stat, fuse_major_version, mfusepy, set_st_attrs

    # fuse_file_info.noflush: libfuse 3.11+ (mfusepy lays the struct out by version)
    noflush = any(field[0] == "noflush" for field in mfusepy.fuse_file_info._fields_)

    class KyfsFUSE(FUSE):  # type: ignore[misc]
        """mfusepy's FUSE, passing on what mfusepy 3.1 drops: rename(2)'s flags
        (kyfs must refuse RENAME_NOREPLACE onto an existing name) and the file handle
        of ftruncate(2) (the path is None once an open file is unlinked); the lseek
        callback it has no wrapper for (SEEK_DATA, SEEK_HOLE); and keeping a Python
        thread state on each of libfuse's threads (_KEPT)."""

        def _wrapper(self, func: Any, *args: Any, **kwargs: Any) -> Any:
            """Every callback: the first one on each of libfuse's threads keeps that
            thread's Python thread state for good (see _KEPT)."""
            if not getattr(_KEPT, "yes", False):
                ctypes.pythonapi.PyGILState_Ensure()  # never released: the state stays
                _KEPT.yes = True
            return super()._wrapper(func, *args, **kwargs)

        def create(self, path: bytes, mode: int, fip: Any) -> int:
            """open(2) with O_CREAT: as mfusepy's, without the inspect.signature of the
            operations' create that it makes at every call (2% of the daemon's time in
            a ``tar x``, py-spy)."""
            fi = fip.contents
            fi.fh = self.operations.create(path.decode(self.encoding, self.errors), mode, fi.flags)
            return 0

        def open(self, path: bytes, fip: Any) -> int:
            """open(2): a virtual file (.kyfs, .search, .versions) is opened with
            direct_io, so every read asks the daemon: its content may change while the
            kernel still holds its size (keys use the page cache, kept valid by
            invalidation). A handle whose close has nothing to commit (read-only:
            KyfsOperations.flushes) is opened with noflush (libfuse 3.11+), so `cat`
            costs no FLUSH request."""
            result = int(super().open(path, fip) or 0)
            fi = fip.contents
            if self.operations.is_virtual(fi.fh):
                fi.direct_io = 1
            if noflush and not self.operations.flushes(fi.fh, fi.flags):
                fi.noflush = 1
            return result

        if fuse_major_version == 3:

            def readdir_fuse_3(
                self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any, flags: int
            ) -> int:
                """readdir(3) and the kernel's READDIRPLUS (``flags`` bit 0), which mfusepy
                3.1 answers without attributes: a key's entry then goes to libfuse with
                every attribute and FUSE_FILL_DIR_PLUS, and the kernel caches the name and
                its attributes as a lookup would. libfuse 3.14 passes them on only when
                each entry carries its offset (with offset 0 it sends ino 0, "ignore the
                attributes": lib/fuse.c fill_dir_plus), so entry i goes with offset i + 1
                and the next call resumes there, in the listing kept for the directory
                handle (KyfsOperations.listing_from). Other entries (dots, workspaces,
                virtual trees) go without attributes, as mfusepy sends them."""
                if not flags & READDIR_PLUS:
                    return int(super().readdir_fuse_3(path, buf, filler, offset, fip, flags))
                name = None if path is None else path.decode(self.encoding, self.errors)
                items = self.operations.listing_from(name, fip.contents.fh, offset)
                for index, (entry, attrs, _) in enumerate(items, start=offset):
                    st = c_stat()
                    set_st_attrs(st, attrs, use_ns=True)
                    full = FILL_DIR_PLUS if "st_nlink" in attrs else 0
                    encoded = entry.encode(self.encoding, self.errors)
                    if filler(buf, encoded, st, index + 1, full) != 0:  # the buffer is full
                        break
                return 0

            def lseek(self, path: bytes | None, offset: int, whence: int, fip: Any) -> int:
                """lseek(2)'s SEEK_DATA and SEEK_HOLE (libfuse 3.8+ passes them on; the
                kernel answers SEEK_SET, SEEK_CUR and SEEK_END itself): mfusepy 3.1
                lists the callback in its operations table but has no wrapper for it,
                and refuses to mount an Operations class that defines it without one."""
                name = None if path is None else path.decode(self.encoding, self.errors)
                return int(self.operations.lseek(name, offset, whence, fip.contents.fh))

            def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
                fh = fip.contents.fh if fip else None  # mfusepy 3.1 drops it
                name = None if path is None else path.decode(self.encoding, self.errors)
                return int(self.operations.truncate(name, length, fh) or 0)

            def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
                return int(
                    self.operations.rename(
                        old.decode(self.encoding, self.errors),
                        new.decode(self.encoding, self.errors),
                        flags,
                    )
                    or 0
                )

    return KyfsFUSE


def status(mountpoint: Path) -> dict[str, Any]:
    """What ``kyfs status`` reports about ``mountpoint``: mounted, stale, daemon pid and
    uptime (seconds), data directory, active workspace, user, workspace count, version,
    and ``log_file``: where the daemon logs (what its record says, else where a daemon
    started now would log), None for the systemd journal."""
    from kyfs.platform import service

    mountpoint = mountpoint.absolute()
    record = read_record(mountpoint) or {}
    pid = record.get("pid") if isinstance(record.get("pid"), int) else None
    alive = pid is not None and _pid_alive(pid)
    stale = is_stale(mountpoint)
    mounted = not stale and os.path.ismount(mountpoint)
    from kyfs.app import engine_session

    with engine_session() as workspaces:  # those of this identity (kyfs.core.identity)
        count = len(workspaces.names())
    started = record.get("started")
    if "log_file" in record and alive:
        log_to = record["log_file"]
    else:
        default = service.log_file()
        log_to = None if default is None else str(default)
    return {
        "mountpoint": str(mountpoint),
        "mounted": mounted,
        "stale": stale,
        "pid": pid if alive else None,
        "uptime_s": round(time.time() - started, 1) if alive and started else None,
        "data_dir": str(paths.data_dir()),
        "active_workspace": config.active_workspace() or config.DEFAULT_WORKSPACE,
        "user": config.current_user(),
        "workspaces": count,
        "version": __version__,
        "log_file": log_to,
    }
