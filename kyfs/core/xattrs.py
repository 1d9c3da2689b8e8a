"""Extended attributes: their limits and who may do what with which namespace (no I/O).

What Linux says (xattr(7), setxattr(2), fs/xattr.c) and ext4 answers, which kyfs follows:

* names are ``namespace.rest``; kyfs stores ``user.*``, ``trusted.*`` and ``security.*``,
  and the POSIX ACLs ``system.posix_acl_access`` and ``system.posix_acl_default``
  (kyfs.core.acl; the mount serves them when the kernel enforces ACLs, FUSE_CAP_POSIX_ACL).
  Any other ``system.*`` name and any other prefix are not supported (ENOTSUP);
* a name is at most 255 bytes (XATTR_NAME_MAX; ERANGE beyond), a value at most 64 KiB
  (XATTR_SIZE_MAX; E2BIG beyond), and the names of one node with their NULs at most
  64 KiB (XATTR_LIST_MAX: the kernel's listxattr(2) buffer; ENOSPC on a set that would
  pass it, as ext4 and tmpfs when a node's attribute space is full);
* ``trusted.*`` needs CAP_SYS_ADMIN (here: uid 0): others get EPERM on a change,
  ENODATA on a read, and do not see the names listed;
* ``security.*`` is read by anyone and changed by uid 0 only (Linux's capability LSM,
  cap_inode_setxattr: EPERM);
* ``user.*`` is only on regular files and directories (EPERM on a change of another
  kind, ENODATA on a read); changing one needs write permission, which the kernel
  checks itself (the mount uses ``default_permissions``);
* ``user.kyfs.*`` is kyfs's own (a key's TTL and times, kyfs.fuse.adapter): answered by
  name, never stored as an attribute and never listed, so copies (``cp -a``,
  ``rsync -X``) do not carry it.

Thread-safety: pure functions over immutable values.
"""

from __future__ import annotations

import stat as st

from kyfs.core import acl
from kyfs.core.errors import (
    AttributeNameTooLong,
    AttributeNotSupported,
    AttributeTooLarge,
    InvalidInput,
    NoAttribute,
    NotPermitted,
)

XATTR_CREATE = 1  # setxattr(2) flags (linux/xattr.h): fail (EEXIST) if the name exists
XATTR_REPLACE = 2  # fail (ENODATA) if it does not
NAME_MAX = 255  # bytes in a name (XATTR_NAME_MAX, linux/limits.h)
SIZE_MAX = 64 * 1024  # bytes in a value (XATTR_SIZE_MAX)
LIST_MAX = 64 * 1024  # bytes of one node's names, each with its NUL (XATTR_LIST_MAX)
STORED = ("user.", "trusted.", "security.")  # namespaces kept per node
ACLS = acl.NAMES  # system.posix_acl_access and _default: kept too
OWN = "user.kyfs."  # kyfs's own attributes: answered by name, not stored, not listed


def encode(name: str) -> bytes:
    """A name as the bytes the kernel sent (mfusepy decodes them with surrogateescape)."""
    return name.encode("utf-8", "surrogateescape")


def decode(name: bytes) -> str:
    """The inverse of :func:`encode`."""
    return name.decode("utf-8", "surrogateescape")


def check(name: str, value: bytes | None = None) -> None:
    """Check a name (and a value to store) against the limits above.

    Raises:
        AttributeNotSupported: (ENOTSUP) not a stored namespace, or kyfs's own (OWN).
        InvalidInput: (EINVAL) a namespace prefix with nothing after it (``user.``).
        AttributeNameTooLong: (ERANGE) the name is over NAME_MAX bytes.
        AttributeTooLarge: (E2BIG) the value is over SIZE_MAX bytes.
    """
    if name in ACLS:
        return  # (a value is checked by kyfs.core.acl.parse)
    if not name.startswith(STORED):
        raise AttributeNotSupported(f"extended attribute namespace not supported: {name}")
    if name in STORED:
        raise InvalidInput(f"extended attribute name without a name: {name}")
    if name.startswith(OWN):
        raise AttributeNotSupported(f"kyfs's own attributes are not stored: {name}")
    if len(encode(name)) > NAME_MAX:
        raise AttributeNameTooLong(f"extended attribute name over {NAME_MAX} bytes")
    if value is not None and len(value) > SIZE_MAX:
        raise AttributeTooLarge(f"extended attribute value over {SIZE_MAX} bytes: {name}")


def visible(name: str, uid: int) -> bool:
    """True when a caller of ``uid`` sees ``name`` listed (trusted.* only root)."""
    return uid == 0 or not name.startswith("trusted.")


def may_read(name: str, uid: int) -> None:
    """Whether a caller of ``uid`` may read ``name`` (user.* on a symlink needs no rule:
    none can be set there, so a read answers ENODATA).

    Raises:
        AttributeNotSupported: (ENOTSUP) a namespace kyfs does not store.
        NoAttribute: (ENODATA) system.* (the mount answers ACLs itself when the kernel
            enforces them; otherwise getfacl then shows the mode), trusted.* for others
            than root.
    """
    if name.startswith("system."):
        raise NoAttribute(f"no such attribute: {name}")
    check(name)
    if not visible(name, uid):
        raise NoAttribute(f"no such attribute: {name}")


def may_change(name: str, uid: int, kind: int) -> None:
    """Whether a caller of ``uid`` may set or remove ``name`` on a node of type ``kind``
    (write permission on the node for user.* is the kernel's check).

    Raises:
        AttributeNotSupported: (ENOTSUP) a namespace kyfs does not store, or system.*.
        NotPermitted: (EPERM) trusted.* or security.* by others than root; user.* on
            anything but a regular file or a directory.
    """
    if name.startswith("system."):  # ACLs are kyfs.vfs.acls's, when the kernel enforces them
        raise AttributeNotSupported(f"extended attribute not supported: {name}")
    check(name)
    if name.startswith("user."):
        if not _user_kind(kind):
            raise NotPermitted(f"user.* attributes only on files and directories: {name}")
    elif uid != 0:
        raise NotPermitted(f"only root changes {name.partition('.')[0]}.* attributes")


def _user_kind(kind: int) -> bool:
    return st.S_ISREG(kind) or st.S_ISDIR(kind)
