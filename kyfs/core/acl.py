"""POSIX ACLs as Linux keeps them in ``system.posix_acl_access`` and
``system.posix_acl_default`` (no I/O).

The value is Linux's ``posix_acl_xattr`` format (include/uapi/linux/posix_acl_xattr.h):
a little-endian u32 version (2), then one 8-byte entry per rule: u16 tag, u16 permission
bits (rwx = 4, 2, 1), u32 uid or gid (unused, 0xFFFFFFFF, for the owner, owning group,
mask and other entries). The rules follow acl(5) and Linux's fs/posix_acl.c:

* the mode's owner, group and other bits are the ACL's owner entry, its mask (the owning
  group's entry when there is no mask) and its other entry (posix_acl_equiv_mode);
* an ACL of the three base entries only says no more than the mode: it is not stored
  (posix_acl_update_mode);
* chmod rewrites the owner, mask (or owning group) and other entries (posix_acl_chmod);
* a node created in a directory with a default ACL gets it, narrowed by the mode asked
  for, as its access ACL, and a new directory gets it as its own default too; the umask
  is then not applied (posix_acl_create, posix_acl_create_masq).

Thread-safety: pure functions over immutable values.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from kyfs.core.errors import InvalidInput

ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"
NAMES = (ACCESS, DEFAULT)
VERSION = 2  # POSIX_ACL_XATTR_VERSION
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NO_ID = 0xFFFFFFFF  # ACL_UNDEFINED_ID
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_ORDER = {USER_OBJ: 0, USER: 1, GROUP_OBJ: 2, GROUP: 3, MASK: 4, OTHER: 5}


class Rule(NamedTuple):
    """One ACL entry: its tag (USER_OBJ ... OTHER), permission bits (0-7) and id."""

    tag: int
    perm: int
    id: int = NO_ID


def parse(value: bytes) -> list[Rule]:
    """The entries of an ACL value, checked as Linux's posix_acl_valid does.

    Raises:
        InvalidInput: (EINVAL) not version 2, a truncated entry, an unknown tag or
            permission, a base entry missing or twice, or named entries without a mask.
    """
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size:
        raise InvalidInput("not a POSIX ACL: bad length")
    if _HEADER.unpack_from(value)[0] != VERSION:
        raise InvalidInput("not a POSIX ACL: unknown version")
    rules = [
        Rule(*_ENTRY.unpack_from(value, at)) for at in range(_HEADER.size, len(value), _ENTRY.size)
    ]
    tags = [rule.tag for rule in rules]
    if any(tag not in _ORDER for tag in tags) or any(rule.perm > 7 for rule in rules):
        raise InvalidInput("not a POSIX ACL: unknown tag or permission")
    if [tags.count(tag) for tag in (USER_OBJ, GROUP_OBJ, OTHER)] != [1, 1, 1]:
        raise InvalidInput("a POSIX ACL needs one owner, owning group and other entry")
    named = USER in tags or GROUP in tags
    if tags.count(MASK) > 1 or (named and MASK not in tags):
        raise InvalidInput("a POSIX ACL with named entries needs one mask entry")
    return rules


def pack(rules: list[Rule]) -> bytes:
    """The value of ``rules``, in the order Linux keeps (by tag, then id)."""
    ordered = sorted(rules, key=lambda rule: (_ORDER[rule.tag], rule.id))
    return _HEADER.pack(VERSION) + b"".join(_ENTRY.pack(*rule) for rule in ordered)


def mode_bits(rules: list[Rule]) -> int:
    """The permission bits (0o777) the ACL shows as the mode."""
    perms = {rule.tag: rule.perm for rule in rules if rule.tag != USER and rule.tag != GROUP}
    group = perms.get(MASK, perms[GROUP_OBJ])
    return perms[USER_OBJ] << 6 | group << 3 | perms[OTHER]


def minimal(rules: list[Rule]) -> bool:
    """True when the ACL says no more than the mode (the three base entries only)."""
    return all(rule.tag in (USER_OBJ, GROUP_OBJ, OTHER) for rule in rules)


def chmod(rules: list[Rule], mode: int) -> list[Rule]:
    """``rules`` after chmod to ``mode``: owner, mask (or owning group) and other take the
    mode's bits (posix_acl_chmod)."""
    has_mask = any(rule.tag == MASK for rule in rules)
    group_tag = MASK if has_mask else GROUP_OBJ
    bits = {USER_OBJ: mode >> 6 & 7, group_tag: mode >> 3 & 7, OTHER: mode & 7}
    return [rule._replace(perm=bits[rule.tag]) if rule.tag in bits else rule for rule in rules]


def inherit(default: list[Rule], mode: int) -> tuple[list[Rule], int]:
    """The access ACL and mode of a node created with ``mode`` (type and special bits
    kept) in a directory whose default ACL is ``default`` (posix_acl_create_masq): the
    owner, mask (or owning group) and other entries narrowed by the mode, and the mode
    narrowed by them."""
    has_mask = any(rule.tag == MASK for rule in default)
    group_tag = MASK if has_mask else GROUP_OBJ
    asked = {USER_OBJ: mode >> 6 & 7, group_tag: mode >> 3 & 7, OTHER: mode & 7}
    rules = [
        rule._replace(perm=rule.perm & asked[rule.tag]) if rule.tag in asked else rule
        for rule in default
    ]
    return rules, (mode & ~0o777) | mode_bits(rules)
