"""POSIX ACLs on a mounted workspace: what the filesystem must do itself when the kernel
enforces ACLs (libfuse's FUSE_CAP_POSIX_ACL: "updating the ACLs in the filesystem,
keeping the file mode in sync with the ACL, and ensuring inheritance of default ACLs when
new filesystem nodes are created"), with the rules of kyfs.core.acl. The kernel checks
permissions against the cached ACL, that only the owner (or root) sets one, and that a
default ACL is only on a directory; the functions here repeat the cheap checks so the
adapter called directly answers as the mount does.

Thread-safety: the caller holds the workspace's lock (kyfs.fuse.adapter's boundary).
"""

from __future__ import annotations

import stat as st
from typing import NamedTuple

from kyfs.core import acl, names
from kyfs.core.errors import AttributeNotSupported, NoAttribute, NotPermitted, PermissionDenied
from kyfs.core.nodes import Entry
from kyfs.engine.base import Workspace


class NewNode(NamedTuple):
    """How to create a node: the mode to create it with, and the ACL attributes to give
    it right after (name, value)."""

    mode: int
    attributes: list[tuple[str, bytes]]

    @property
    def create_mode(self) -> int:
        """The mode to create the node with: :attr:`mode`, less its group and other bits
        while an access ACL is still to be given, so that the node is never open wider
        than its ACL allows (its mask is in those bits); :func:`give` then sets the ACL
        and the whole mode in one transaction, and a failure there leaves it owner-only."""
        if any(name == acl.ACCESS for name, _ in self.attributes):
            return self.mode & ~0o077
        return self.mode


def set_acl(
    workspace: Workspace,
    key: str,
    entry: Entry,
    name: str,
    value: bytes,
    caller: tuple[int, frozenset[int]],
) -> None:
    """setxattr(2) of ``system.posix_acl_access`` or ``_default`` on ``entry`` (at
    ``key``) by ``caller`` (uid, its gids). An access ACL sets the mode's bits and is not
    kept when it says no more than the mode; the setgid bit goes when the caller is not
    root and not in the file's group (posix_acl_update_mode). A default ACL is kept as
    given.

    Raises:
        InvalidInput: (EINVAL) not a valid ACL (kyfs.core.acl.parse).
        NotPermitted: (EPERM) the caller neither owns the node nor is root.
        PermissionDenied: (EACCES) a default ACL on anything but a directory.
        AttributeNotSupported: (ENOTSUP) on a symbolic link.
    """
    uid, gids = caller
    if st.S_ISLNK(entry.kind):
        raise AttributeNotSupported("symbolic links have no ACL")
    if uid not in (0, entry.uid):
        raise NotPermitted("only the owner sets a file's ACL")
    rules = acl.parse(value)
    if name == acl.DEFAULT:
        if not st.S_ISDIR(entry.kind):
            raise PermissionDenied("only a directory has a default ACL")
        workspace.set_xattr(key, name, value)
        return
    mode = (entry.mode & ~0o777) | acl.mode_bits(rules)
    if uid != 0 and entry.gid not in gids:
        mode &= ~st.S_ISGID
    workspace.set_xattr_and_mode(key, name, None if acl.minimal(rules) else acl.pack(rules), mode)


def remove_acl(workspace: Workspace, key: str, entry: Entry, name: str, uid: int) -> None:
    """removexattr(2) of an ACL: the mode stays as it is.

    Raises:
        NotPermitted: (EPERM) the caller neither owns the node nor is root.
        NoAttribute: (ENODATA) it has none.
    """
    if uid not in (0, entry.uid):
        raise NotPermitted("only the owner removes a file's ACL")
    workspace.remove_xattr(key, name)


def stat_for_views(workspace: Workspace, key: str) -> Entry:
    """The entry at ``key`` as the views that judge by owner and mode alone (``.versions``,
    ``/.search``: kyfs.core.access) must see it: with its group and other bits cleared
    when it has an access ACL, so that a view never shows more than the ACL lets through
    (a user a named entry shuts out is judged by the other bits there). Narrower than
    the kernel for a user the ACL lets in: only the owner and root see such a key's
    versions and matches.

    Raises:
        KeyNotFound: (ENOENT).
    """
    entry = workspace.stat(key)
    try:
        workspace.get_xattr(key, acl.ACCESS)
    except NoAttribute:
        return entry
    return entry._replace(mode=entry.mode & ~0o077)


def after_chmod(workspace: Workspace, key: str, mode: int) -> None:
    """chmod of ``key`` to ``mode``: its access ACL, if any, takes the new owner, mask (or
    group) and other bits (posix_acl_chmod). No query when no node of the workspace has
    an access ACL (Workspace.xattr_in_use)."""
    if not workspace.xattr_in_use(acl.ACCESS):
        return
    try:
        stored = workspace.get_xattr(key, acl.ACCESS)
    except NoAttribute:
        return
    workspace.set_xattr(key, acl.ACCESS, acl.pack(acl.chmod(acl.parse(stored), mode)))


def new_node(workspace: Workspace, key: str, mode: int, umask: int, is_dir: bool) -> NewNode:
    """How to create ``key`` asked with ``mode`` by a process of ``umask``: in a
    directory without a default ACL, the mode less the umask (the mount asks the kernel
    not to apply it: FUSE_CAP_DONT_MASK); with one, the mode narrowed by that ACL, which
    becomes the node's access ACL (unless it says no more than the mode) and a new
    directory's default ACL too (posix_acl_create). No query when no node of the
    workspace has a default ACL (Workspace.xattr_in_use)."""
    if not workspace.xattr_in_use(acl.DEFAULT):
        return NewNode(mode & ~umask, [])
    try:
        stored = workspace.get_xattr(names.parent_of(key), acl.DEFAULT)
    except NoAttribute:
        return NewNode(mode & ~umask, [])
    rules, mode = acl.inherit(acl.parse(stored), mode)
    attributes = [] if acl.minimal(rules) else [(acl.ACCESS, acl.pack(rules))]
    if is_dir:
        attributes.append((acl.DEFAULT, stored))
    return NewNode(mode, attributes)


def give(workspace: Workspace, key: str, made: NewNode) -> None:
    """Store the ACLs :func:`new_node` chose for ``key``, once it is created with
    ``made.create_mode``: the access ACL together with the group and other bits it
    implies (Workspace.set_xattr_and_mode, one transaction), a directory's default ACL.

    Raises:
        KeyNotFound: (ENOENT) ``key`` went meanwhile; as Workspace.set_xattr otherwise.
    """
    for name, value in made.attributes:
        if name == acl.ACCESS:
            created = workspace.stat(key).mode  # its setgid bit, as the parent gave it
            mode = (created & ~0o077) | (made.mode & 0o077)
            workspace.set_xattr_and_mode(key, name, value, mode)
        else:
            workspace.set_xattr(key, name, value)
