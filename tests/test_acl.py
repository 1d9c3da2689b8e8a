"""kyfs.core.acl against what Linux's ext4 stored and showed for the same steps (the
values below were read with ``getfattr -e hex`` after setfacl on ext4, kernel 6.18)."""

from __future__ import annotations

import pytest

from kyfs.core import acl
from kyfs.core.errors import InvalidInput

# setfacl -m u:1234:rw,g::r f   (a file of mode 0644): mode 0664 after
NAMED = bytes.fromhex(
    "0200000001000600ffffffff02000600d204000004000400ffffffff10000600ffffffff20000400ffffffff"
)
# setfacl -d -m u:1234:rwx d   (a directory of mode 0755)
DEFAULT = bytes.fromhex(
    "0200000001000700ffffffff02000700d204000004000500ffffffff10000700ffffffff20000500ffffffff"
)


def test_parse_pack_and_the_mode_an_acl_shows() -> None:
    rules = acl.parse(NAMED)
    assert acl.pack(rules) == NAMED and acl.pack(list(reversed(rules))) == NAMED
    assert acl.mode_bits(rules) == 0o664 and not acl.minimal(rules)
    base = [acl.Rule(acl.USER_OBJ, 7), acl.Rule(acl.GROUP_OBJ, 5), acl.Rule(acl.OTHER, 0)]
    assert acl.minimal(base) and acl.mode_bits(base) == 0o750


def test_chmod_rewrites_owner_mask_and_other() -> None:
    """chmod 640 of the file above: ext4 keeps the named entry, the mask becomes r--."""
    changed = acl.chmod(acl.parse(NAMED), 0o640)
    assert acl.mode_bits(changed) == 0o640
    assert acl.Rule(acl.USER, 6, 1234) in changed and acl.Rule(acl.MASK, 4) in changed


def test_inheritance_as_ext4_under_umask_077() -> None:
    """touch d/new and mkdir d/sub under umask 077: ext4 gave 0664 and 0775 (the umask
    does not apply under a default ACL) and these ACLs."""
    rules, mode = acl.inherit(acl.parse(DEFAULT), 0o100666)
    assert mode == 0o100664
    assert acl.pack(rules) == bytes.fromhex(
        "0200000001000600ffffffff02000700d204000004000500ffffffff10000600ffffffff20000400ffffffff"
    )
    rules, mode = acl.inherit(acl.parse(DEFAULT), 0o40777)
    assert mode == 0o40775 and acl.pack(rules) == DEFAULT


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x01\x00\x00\x00",  # version 1
        NAMED[:-1],  # a truncated entry
        NAMED[:4] + NAMED[12:],  # no owner entry
        NAMED.replace(bytes.fromhex("10000600ffffffff"), b""),  # a named entry, no mask
        NAMED[:6] + b"\x08\x00" + NAMED[8:],  # permission 8
    ],
)
def test_what_is_not_an_acl(value: bytes) -> None:
    with pytest.raises(InvalidInput):
        acl.parse(value)
