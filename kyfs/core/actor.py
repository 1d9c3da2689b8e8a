"""Who makes a change: the source (``cli``, ``mount``, ``api``, ``mcp``, ``kycli``), the
user, and for the mount the calling process (pid; its command name is looked up by
kyfs.platform.processes). Every history row records it (kyfs.engine.sql.history.record),
so ``kyfs log`` and ``kyfs watch`` (kyfs.timeline) can say who changed what.

The actor of this process is one setting, :func:`set_actor`: the CLI sets ``cli`` and
its identity as it starts, the mount daemon installs a function that asks libfuse for the
caller of the request being served (it is called only when a change is recorded, so the
mount's read path pays nothing). No I/O here.

Thread-safety: :func:`set_actor` is meant to be called once at start-up, before other
threads run; :func:`current` may be called from any thread (the mount's function reads
the calling thread's own FUSE request context).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Actor(NamedTuple):
    """Who makes a change: ``source`` (cli, mount, api, mcp, kycli; None: not known),
    ``user`` (a kyfs identity, or for the mount the calling uid's login name), ``pid``
    (the calling process, for mount changes only; None otherwise) and ``comm`` (its
    command name, /proc/PID/comm: at most 15 bytes; None when not known)."""

    source: str | None = None
    user: str | None = None
    pid: int | None = None
    comm: str | None = None


UNKNOWN = Actor()
_current: Callable[[], Actor] = lambda: UNKNOWN  # noqa: E731 (a settable default)


def set_actor(actor: Actor | Callable[[], Actor]) -> None:
    """Make ``actor`` (or, called at each change, the function) the actor of this
    process's changes from now on."""
    global _current
    _current = (lambda: actor) if isinstance(actor, Actor) else actor


def setting() -> Callable[[], Actor]:
    """What :func:`set_actor` set last (to put back: an in-process caller of the CLI)."""
    return _current


def current() -> Actor:
    """The actor of a change being recorded now."""
    return _current()
