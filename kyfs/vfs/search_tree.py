"""``/.search/<query>/``: a read-only directory of symbolic links to the best matches of
``<query>`` across every workspace, best first, named ``NN-<workspace>-<key with / as _>``
and pointing at ``../../<workspace>/<key>``. Hidden from readdir of the mount's root, so
``grep -r`` and ``find`` never walk it.

Each caller sees only the matches it could open through the mount: search permission on
the workspace's top directory and every directory above the key, and read permission on
the key (kyfs.core.access.permits, by the uid and groups of the request), so that on a
mount shared with ``-o allow_other`` the listing is no oracle for keys others cannot read.
The links are numbered among those the caller sees, and the best SEARCH_LIMIT of those
are listed (more matches are looked at when others' keys take places): how many others
matched is never shown.

A query's matches, and each caller's listing of them, are kept SEARCH_TTL seconds, so
that readdir, lookups and readlink of one ``ls -l`` agree.

Thread-safety: any of the daemon's threads may ask; each workspace is searched under its
``lock``, and the two caches are looked at and changed under the tree's own mutex.
"""

from __future__ import annotations

import os
import stat as st
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kyfs import search
from kyfs.core import access, names
from kyfs.core.access import Caller
from kyfs.core.errors import InvalidInput, KeyNotFound, KyfsError
from kyfs.engine.base import Workspace
from kyfs.vfs import acls
from kyfs.vfs.tree import Listing, read_only_dir, virtual_ino

SEARCH_DIR = ".search"
SEARCH_LIMIT = 100  # matches listed per query directory
SEARCH_SCAN = 6400  # matches looked at, at most, to find SEARCH_LIMIT a caller may open
SEARCH_TTL = 2.0  # seconds a query's listing is kept


class SearchTree:
    """The ``/.search`` tree.

    Args:
        workspace_names: the workspaces to search (called at each new query).
        open_workspace: a workspace by name (the daemon's cached one).
    """

    def __init__(
        self, workspace_names: Callable[[], list[str]], open_workspace: Callable[[str], Workspace]
    ) -> None:
        self._names = workspace_names
        self._open = open_workspace
        self._hits: dict[tuple[str, int], tuple[float, list[tuple[str, str]]]] = {}
        self._cache: dict[tuple[str, Caller], tuple[float, dict[str, str]]] = {}
        self._mutex = threading.Lock()  # around each look at and change of the two caches

    @contextmanager
    def _use(self, name: str) -> Iterator[Workspace]:
        workspace = self._open(name)
        with workspace.lock:  # the daemon's other threads use the same connection
            yield workspace

    def _matches(self, query: str, limit: int, now: float) -> list[tuple[str, str]]:
        """(workspace, key) of the ``limit`` best matches of ``query`` across every
        workspace, best first, for every caller."""
        with self._mutex:
            cached = self._hits.get((query, limit))
        if cached is not None and now - cached[0] < SEARCH_TTL:
            return cached[1]
        results = search.search(  # words only: embedding (a model load, pending texts)
            self._names(), query, limit=limit, use=self._use, parallel=False, hybrid=False
        )  # never runs inside a FUSE request
        hits = [(hit.workspace, hit.key) for hit in results.hits]
        with self._mutex:
            self._hits = {q: v for q, v in self._hits.items() if now - v[0] < SEARCH_TTL}
            self._hits[(query, limit)] = (now, hits)
        return hits

    def _visible(self, query: str, caller: Caller, now: float) -> list[tuple[str, str]]:
        """The SEARCH_LIMIT best matches ``caller`` could open: more matches are asked
        for (four times as many each round, up to SEARCH_SCAN) until that many are
        visible or there are no more, so how many others' keys match changes neither
        how many are listed nor which (up to SEARCH_SCAN matches)."""
        searchable: dict[tuple[str, str], bool] = {}  # (workspace, directory): once each
        limit = SEARCH_LIMIT
        while True:
            hits = self._matches(query, limit, now)
            shown = [hit for hit in hits if self._may_open(caller, *hit, searchable)]
            if len(shown) >= SEARCH_LIMIT or len(hits) < limit or limit >= SEARCH_SCAN:
                return shown[:SEARCH_LIMIT]
            limit = min(limit * 4, SEARCH_SCAN)

    def _may_open(
        self, caller: Caller, workspace_name: str, key: str, searchable: dict[tuple[str, str], bool]
    ) -> bool:
        """True when ``caller`` could open ``key`` of ``workspace_name`` for reading
        through the mount (the mount's root is 0755: anyone may search it): search
        permission on the workspace's top and every directory above ``key``, each looked
        up once per listing (``searchable``), and read permission on ``key``."""
        if caller.is_root:
            return True
        try:
            with self._use(workspace_name) as workspace:
                for directory in ["", *names.ancestors(key)]:
                    known = searchable.get((workspace_name, directory))
                    if known is None:
                        above = acls.stat_for_views(workspace, directory)
                        known = access.permits(
                            caller, above.uid, above.gid, above.mode, access.SEARCH, True
                        )
                        searchable[(workspace_name, directory)] = known
                    if not known:
                        return False
                entry = acls.stat_for_views(workspace, key)  # an ACL narrows it
        except KyfsError:  # gone since the search, or unreadable: not shown
            return False
        return access.permits(caller, entry.uid, entry.gid, entry.mode, access.READ, False)

    def links(self, query: str, caller: Caller) -> dict[str, str]:
        """Link name -> target for the matches of ``query`` across every workspace that
        ``caller`` could open, numbered among those.

        Raises:
            InvalidQuery: (EINVAL) never for a plain query: it is quoted.
        """
        now = time.monotonic()
        with self._mutex:
            cached = self._cache.get((query, caller))
        if cached is not None and now - cached[0] < SEARCH_TTL:
            return cached[1]
        shown = self._visible(query, caller, now)
        width = max(2, len(str(len(shown))))
        listing = {}
        for rank, (workspace, key) in enumerate(shown, 1):
            seen_as = names.to_os(key)  # the name's bytes, as the mount shows them
            name = f"{rank:0{width}d}-{workspace}-{seen_as.replace('/', '_')}"
            name = os.fsdecode(os.fsencode(name)[: names.NAME_MAX])
            listing[name] = f"../../{workspace}/{seen_as}"
        with self._mutex:
            self._cache = {q: v for q, v in self._cache.items() if now - v[0] < SEARCH_TTL}
            self._cache[(query, caller)] = (now, listing)
        return listing

    def getattr(self, rest: str, caller: Caller) -> dict[str, Any]:
        """``/.search`` and ``/.search/<any query>`` are directories; their entries links."""
        attrs = read_only_dir(f"{SEARCH_DIR}/{rest}")
        query, _, name = rest.partition("/")
        if not name:
            return attrs
        target = self.links(query, caller).get(name)
        if target is None or "/" in name:
            raise KeyNotFound(f"no such match: {name}")
        attrs.update(st_mode=st.S_IFLNK | 0o777, st_nlink=1, st_size=len(os.fsencode(target)))
        return attrs

    def readdir(self, rest: str, caller: Caller) -> Listing:
        """The links of one query; nothing at the top (queries are not listed)."""
        if not rest or "/" in rest:
            return []
        return [
            (name, {"st_mode": st.S_IFLNK | 0o777, "st_ino": virtual_ino(f"{rest}/{name}")}, 0)
            for name in self.links(rest, caller)
        ]

    def readlink(self, rest: str, caller: Caller) -> str:
        """The target of one match's link. EINVAL for a directory; ENOENT."""
        query, _, name = rest.partition("/")
        if not name:
            raise InvalidInput("not a symbolic link")
        target = self.links(query, caller).get(name)
        if target is None:
            raise KeyNotFound(f"no such match: {name}")
        return target

    def content(self, rest: str, caller: Caller | None = None) -> bytes:
        """Nothing to read: the kernel follows the links."""
        raise KeyNotFound("no file here")
