"""Identities and grants: which workspaces a user of kyfs sees and what it may do with
them (ProntoDB's addresses: "no shared state between addresses"). Pure rules, no I/O:
kyfs.scope applies them to an engine, for the CLI and the mount alike.

* An identity is a name (``kyfs --user NAME``, ``KYFS_USER``). The **main** identity is
  the login name (no ``--user``, or ``--user`` equal to it): the data directory's
  owner, whose workspaces are stored under their own names (so nothing moved when
  identities came). Any other identity's workspace ``W`` is stored as ``NAME~W``
  (kyfs.core.names.STORED_NAME_RE) and seen by NAME as ``W``.
* ``shared`` is every identity's, read and write (contextd's shared database).
* A :class:`Grant` lets identity ``grantee`` see workspace ``workspace`` of identity
  ``owner`` as ``OWNER~WORKSPACE``, read-write or read-only.
* Everything else of other identities is not there: the same WorkspaceNotFound
  (ENOENT, exit 1) as a name that does not exist (only the registry, ``kyfs users``,
  lists every identity's workspace names).

The rules are per operation (:data:`READ`, :data:`WRITE`, :data:`MANAGE`):

==================  ========  ========  =========================================
workspace           read      write     manage (drop, rename, share, the trash)
                    (fsck)    (fsck
                              --repair)
==================  ========  ========  =========================================
own                 yes       yes       yes
shared              yes       yes       no (EPERM: it always exists)
granted read-write  yes       yes       no (EPERM)
granted read-only   yes       EROFS     no (EPERM)
anyone else's       ENOENT    ENOENT    ENOENT
==================  ========  ========  =========================================

Identities are claims, not credentials: every identity runs as the same unix user and
can read the data directory's files. They keep cooperating agents apart (no agent
overwrites or reads another's keys by mistake, a search covers one agent's data), not
a hostile one (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from kyfs.core.errors import NotPermitted, ReadOnly, WorkspaceNotFound
from kyfs.core.names import IDENTITY_SEP, check_workspace_name

READ, WRITE, MANAGE = "read", "write", "manage"
SHARED = "shared"  # kyfs.platform.config.SHARED_WORKSPACE, every identity's


@dataclass(frozen=True)
class Grant:
    """Identity ``grantee`` may use workspace ``workspace`` of identity ``owner`` (names
    as their owner sees them), for reading only when ``read_only``."""

    owner: str
    workspace: str
    grantee: str
    read_only: bool = False

    def renamed(self, workspace: str) -> Grant:
        """This grant for the owner's workspace renamed to ``workspace``."""
        return Grant(self.owner, workspace, self.grantee, self.read_only)


@dataclass(frozen=True)
class Scope:
    """What identity ``identity`` sees, given the ``main`` identity's name (the login
    name) and the data directory's ``grants``."""

    identity: str
    main: str
    grants: tuple[Grant, ...] = ()

    @property
    def is_main(self) -> bool:
        """True for the data directory's owner (stored names without ``~``)."""
        return self.identity == self.main

    def _stored_of(self, owner: str, name: str) -> str:
        return name if owner == self.main else f"{owner}{IDENTITY_SEP}{name}"

    def _grant(self, owner: str, name: str) -> Grant | None:
        for grant in self.grants:
            if (grant.owner, grant.workspace, grant.grantee) == (owner, name, self.identity):
                return grant
        return None

    def split(self, name: str) -> tuple[str, str]:
        """(owner, workspace) of a name as this identity writes it: ``W`` is its own,
        ``OWNER~W`` another identity's.

        Raises:
            InvalidName: (EINVAL, exit 2) either part breaks the workspace-name rule.
        """
        owner, sep, rest = name.partition(IDENTITY_SEP)
        if not sep:
            return self.identity, check_workspace_name(name)
        return check_workspace_name(owner), check_workspace_name(rest)

    def stored(self, name: str, op: str = READ) -> str:
        """The stored name of workspace ``name`` as this identity writes it, for
        operation ``op`` (READ, WRITE or MANAGE; see the module's table).

        Raises:
            InvalidName: (exit 2). WorkspaceNotFound: (ENOENT, exit 1) another
            identity's without a grant. ReadOnly: (EROFS, exit 6) a write through a
            read-only grant. NotPermitted: (EPERM, exit 6) managing ``shared`` or a
            granted workspace.
        """
        owner, workspace = self.split(name)
        if workspace == SHARED and owner == self.identity:
            if op == MANAGE:
                raise NotPermitted("the shared workspace is every identity's: it always exists")
            return SHARED
        if owner == self.identity:
            return self._stored_of(owner, workspace)
        grant = self._grant(owner, workspace)
        if grant is None:
            raise WorkspaceNotFound(f"workspace not found: {name}")
        if op == MANAGE:
            raise NotPermitted(f"{name} is {owner}'s: only its owner can do that")
        if op == WRITE and grant.read_only:
            raise ReadOnly(f"{name} is shared with {self.identity} read-only")
        return self._stored_of(owner, workspace)

    def owner_of(self, stored: str) -> tuple[str, str]:
        """(owner identity, the owner's name for it) of a stored name. ``MAIN~W`` (which
        only a restore of a foreign backup could store) is nobody's: ``("", W)``, so it
        never stands in for the main identity's ``W``."""
        owner, sep, rest = stored.partition(IDENTITY_SEP)
        if not sep:
            return self.main, stored
        return ("", rest) if owner == self.main else (owner, rest)

    def visible(self, stored: str) -> str | None:
        """The name this identity sees stored workspace ``stored`` under, or None when it
        is not this identity's to see."""
        if stored == SHARED:
            return SHARED
        owner, workspace = self.owner_of(stored)
        if owner == self.identity:
            return workspace
        if self._grant(owner, workspace) is not None:
            return f"{owner}{IDENTITY_SEP}{workspace}"
        return None

    def read_only(self, stored: str) -> bool:
        """True when this identity may only read stored workspace ``stored``."""
        owner, workspace = self.owner_of(stored)
        if owner == self.identity or stored == SHARED:
            return False
        grant = self._grant(owner, workspace)
        return grant is None or grant.read_only
