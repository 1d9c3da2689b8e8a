"""The one place that loads the FUSE binding (mfusepy) and picks libfuse3.

mfusepy loads libfuse2 first when both are installed; the environment variable
``FUSE_LIBRARY_NAME=fuse3``, set before the import, makes it load libfuse3
(needed for UTIME_NOW/UTIME_OMIT, ``O_TRUNC`` in open, and the only library on
fuse3-only systems). Every kyfs module that needs the binding imports it from
here, so the choice is made once. Importing this module loads libfuse: keep it
out of code paths that do not mount (the CLI imports it lazily).
"""

from __future__ import annotations

import os

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

import mfusepy

from kyfs.core.actor import Actor
from kyfs.platform import processes

FUSE = mfusepy.FUSE
FuseOSError = mfusepy.FuseOSError
Operations = mfusepy.Operations
fuse_major_version: int = mfusepy.fuse_version_major
c_stat = mfusepy.c_stat  # struct stat, as libfuse fills directory entries with it
set_st_attrs = mfusepy.set_st_attrs  # a stat dict into a c_stat


def fuse_get_context() -> tuple[int, int, int]:
    """(uid, gid, pid) of the process whose request is being served (libfuse's
    fuse_get_context); outside a request (the adapter called directly, in tests) this
    process's own."""
    try:
        uid, gid, pid = mfusepy.fuse_get_context()
    except ValueError:  # NULL context: not inside a FUSE request
        return os.getuid(), os.getgid(), os.getpid()
    return int(uid), int(gid), int(pid)


def request_actor(identity: str | None) -> Actor:
    """Who makes a change through the mount (kyfs.core.actor): source "mount", the
    calling process's pid and command name (cached per pid: kyfs.platform.processes) and
    its uid's login name; outside a request (the daemon's own work, such as TTL expiry)
    ``identity``, the mount's, and no process. Never raises."""
    try:
        uid, _, pid = mfusepy.fuse_get_context()
    except ValueError:  # NULL context: not inside a FUSE request
        return Actor("mount", identity)
    if not pid:  # a request the kernel makes on nobody's behalf (a release)
        return Actor("mount", identity)
    return Actor("mount", processes.user_name(int(uid)), int(pid), processes.command_name(pid))


def fuse_get_umask() -> int:
    """The umask of the process whose request is being served (libfuse 3's
    ``fuse_context.umask``, which the kernel sends with create and mkdir); 0 outside a
    request (the adapter called directly: the mode given is the one meant)."""
    try:
        return int(mfusepy._libfuse.fuse_get_context().contents.umask) & 0o777
    except ValueError:  # NULL context: not inside a FUSE request
        return 0


def fuse_getgroups(pid: int) -> frozenset[int]:
    """The supplementary group ids of process ``pid`` (the caller of a request: the pid
    of fuse_get_context), read from the "Groups:" line of /proc/PID/task/PID/status as
    libfuse's fuse_getgroups does (fuse_req_getgroups in lib/fuse_lowlevel.c). libfuse's
    own function is not called: outside a request its context is not NULL but garbage,
    and it crashed the process. Empty when the kernel does not tell (the process is
    gone, or no /proc): callers then judge by the primary gid alone, which can only deny
    more, never allow more."""
    try:
        with open(f"/proc/{pid}/task/{pid}/status", "rb") as status:  # Name: may be any bytes
            for line in status:
                if line.startswith(b"Groups:"):
                    return frozenset(int(gid) for gid in line.split()[1:])
    except (OSError, ValueError):
        pass
    return frozenset()


__all__ = [
    "FUSE",
    "FuseOSError",
    "Operations",
    "c_stat",
    "fuse_get_context",
    "fuse_get_umask",
    "fuse_getgroups",
    "fuse_major_version",
    "mfusepy",
    "request_actor",
    "set_st_attrs",
]
