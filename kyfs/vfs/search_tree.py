"""``/.search/<query>/``: a read-only directory of symbolic links to the best matches of
``<query>`` across every workspace, best first, named ``NN-<workspace>-<key with / as _>``
and pointing at ``../../<workspace>/<key>``. Hidden from readdir of the mount's root, so
``grep -r`` and ``find`` never walk it.

A query's listing is kept SEARCH_TTL seconds, so that readdir, lookups and readlink of
one ``ls -l`` agree.

Thread-safety: any of the daemon's threads may ask; each workspace is searched under its
``lock``, and the listing cache is a dict (single operations, atomic in CPython).
"""

from __future__ import annotations

import stat as st
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kyfs import search
from kyfs.core import names
from kyfs.core.errors import InvalidInput, KeyNotFound
from kyfs.engine.base import Workspace
from kyfs.vfs.tree import Listing, read_only_dir, virtual_ino

SEARCH_DIR = ".search"
SEARCH_LIMIT = 100  # matches listed per query directory
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
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}

    @contextmanager
    def _use(self, name: str) -> Iterator[Workspace]:
        workspace = self._open(name)
        with workspace.lock:  # the daemon's other threads use the same connection
            yield workspace

    def links(self, query: str) -> dict[str, str]:
        """Link name -> target for the matches of ``query`` across every workspace.

        Raises:
            InvalidQuery: (EINVAL) never for a plain query: it is quoted.
        """
        now = time.monotonic()
        cached = self._cache.get(query)
        if cached is not None and now - cached[0] < SEARCH_TTL:
            return cached[1]
        results = search.search(
            self._names(), query, limit=SEARCH_LIMIT, use=self._use, parallel=False
        )
        width = max(2, len(str(len(results.hits))))
        listing = {}
        for rank, hit in enumerate(results.hits, 1):
            name = f"{rank:0{width}d}-{hit.workspace}-{hit.key.replace('/', '_')}"
            name = name.encode()[: names.NAME_MAX].decode(errors="ignore")
            listing[name] = f"../../{hit.workspace}/{hit.key}"
        self._cache = {q: v for q, v in self._cache.items() if now - v[0] < SEARCH_TTL}
        self._cache[query] = (now, listing)
        return listing

    def getattr(self, rest: str) -> dict[str, Any]:
        """``/.search`` and ``/.search/<any query>`` are directories; their entries links."""
        attrs = read_only_dir(f"{SEARCH_DIR}/{rest}")
        query, _, name = rest.partition("/")
        if not name:
            return attrs
        target = self.links(query).get(name)
        if target is None or "/" in name:
            raise KeyNotFound(f"no such match: {name}")
        attrs.update(st_mode=st.S_IFLNK | 0o777, st_nlink=1, st_size=len(target))
        return attrs

    def readdir(self, rest: str) -> Listing:
        """The links of one query; nothing at the top (queries are not listed)."""
        if not rest or "/" in rest:
            return []
        return [
            (name, {"st_mode": st.S_IFLNK | 0o777, "st_ino": virtual_ino(f"{rest}/{name}")}, 0)
            for name in self.links(rest)
        ]

    def readlink(self, rest: str) -> str:
        """The target of one match's link. EINVAL for a directory; ENOENT."""
        query, _, name = rest.partition("/")
        if not name:
            raise InvalidInput("not a symbolic link")
        target = self.links(query).get(name)
        if target is None:
            raise KeyNotFound(f"no such match: {name}")
        return target

    def content(self, rest: str) -> bytes:
        """Nothing to read: the kernel follows the links."""
        raise KeyNotFound("no file here")
