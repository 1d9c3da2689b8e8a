"""What a process is called: the command name of a pid (``/proc/PID/comm``) and the login
name of a uid, for the history rows of changes made through the mount
(kyfs.core.actor). Both are cached, so a process writing many files costs one read of
/proc; neither ever raises (a change is never refused for want of a name).

A pid is given out again once its process is gone, so a cached command name is trusted
for COMM_TTL_S seconds only, then read again: a pid reused within that second is named
after the process before it. A process gone by the time of the read keeps the last name
seen (its commit at the last close comes after its exit).

Thread-safety: safe from any thread (the caches are dicts updated whole-entry; a race
costs at most a second read of /proc).
"""

from __future__ import annotations

import pwd
import time

COMM_TTL_S = 1.0  # seconds a pid's command name is trusted before it is read again
CACHE_MAX = 1024  # pids (and uids) remembered; the oldest half goes when it is full
_comms: dict[int, tuple[str | None, float]] = {}
_users: dict[int, str] = {}


def command_name(pid: int) -> str | None:
    """The command name of process ``pid`` (``/proc/PID/comm``, at most 15 bytes, decoded
    with replacement), or None when it cannot be read and was never seen. Cost: a dict
    look-up; a read of /proc at most once per COMM_TTL_S per pid."""
    if pid <= 0:
        return None
    now = time.monotonic()
    cached = _comms.get(pid)
    if cached is not None and now - cached[1] < COMM_TTL_S:
        return cached[0]
    try:
        with open(f"/proc/{pid}/comm", "rb") as file:
            name: str | None = file.read(64).rstrip(b"\n").decode("utf-8", "replace")
    except OSError:  # gone (or no /proc): the last name seen, if any
        name = cached[0] if cached is not None else None
    if len(_comms) >= CACHE_MAX:
        for old in list(_comms)[: CACHE_MAX // 2]:
            _comms.pop(old, None)
    _comms[pid] = (name, now)
    return name


def user_name(uid: int) -> str:
    """The login name of ``uid`` (the password database), else the number as text."""
    found = _users.get(uid)
    if found is None:
        try:
            found = pwd.getpwuid(uid).pw_name
        except (KeyError, OSError):
            found = str(uid)
        if len(_users) >= CACHE_MAX:
            _users.clear()
        _users[uid] = found
    return found
