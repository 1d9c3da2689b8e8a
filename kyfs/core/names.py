"""The naming rules for workspaces and keys, as pure functions.

* A workspace name is 1-64 characters matching ``[A-Za-z0-9][A-Za-z0-9._-]*``
  (so it is a safe file name and never ``.``, ``..`` or a hidden file).
* An engine stores the workspace ``NAME`` of identity ``USER`` (``kyfs --user USER``,
  kyfs.core.identity) as ``USER~NAME``: a stored name is a workspace name, or two
  joined by ``~`` (which a workspace name never holds).
* A key is a ``/``-separated path of components. Each component is 1-255 bytes
  (NAME_MAX on Linux) of any value but ``/`` and NUL, as on Linux, and is neither ``.`` nor
  ``..`` (POSIX gives those a meaning of their own), nor one of the names the mount
  keeps for its hidden trees (``.search``, ``.kyfs``, ``.versions``, ``.snapshots``). The
  whole key is at most KEY_MAX = 65,536 bytes. Linux's PATH_MAX (4096 bytes) bounds one
  path given to a system call, not the depth of a tree: a process reaches deeper names through
  relative paths (chdir, openat), and tmpfs has no limit. 64 KiB leaves room for that
  and still bounds what one key costs. ``a/b/c`` is shown by the mount as file ``c``
  in directory ``b`` in directory ``a``.
* Names are bytes on Linux; a key is text. Bytes that are not UTF-8 reach Python as
  ``surrogateescape`` does (os.fsdecode: byte 0xNN as U+DCNN) and are stored, char for
  char, as the private-use code points U+10FF80-U+10FFFF (:func:`from_os`), which both
  engines keep as UTF-8 text; :func:`to_os` gives them back byte-exact. A name holding
  those 128 code points themselves (plane 16's last private-use block, which no
  script uses) is refused with EILSEQ, so the mapping is one-to-one. :func:`shown`
  prints such bytes as ``\\xNN``, as Python's ``backslashreplace`` does.

Pure functions, safe from any thread.
"""

from __future__ import annotations

import os
import re

from kyfs.core.errors import IllegalByteSequence, InvalidName, NameTooLong

WORKSPACE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
IDENTITY_SEP = "~"  # between an identity and its workspace's name in a stored name
STORED_NAME_RE = re.compile(
    rf"(?:{WORKSPACE_NAME_RE.pattern}{IDENTITY_SEP})?{WORKSPACE_NAME_RE.pattern}"
)
NAME_MAX = 255  # bytes, Linux limits.h
# The mount's own hidden trees (/.search, /.kyfs, <workspace>/.versions and
# <workspace>/.snapshots): never a key's name.
RESERVED = frozenset({".search", ".kyfs", ".versions", ".snapshots"})
KEY_MAX = 64 * 1024  # bytes of UTF-8 in a whole key (see the module docstring)
SEP = "/"


def check_workspace_name(name: str) -> str:
    """Return ``name`` when it is a valid workspace name.

    Raises:
        InvalidName: (EINVAL, exit 2) the name breaks the rule above.
    """
    if not WORKSPACE_NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid workspace name {name!r}: use 1-64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def check_stored_name(name: str) -> str:
    """Return ``name`` when an engine may store a workspace under it: a workspace name,
    or ``USER~NAME`` (both parts workspace names).

    Raises:
        InvalidName: (EINVAL, exit 2) anything else.
    """
    if not STORED_NAME_RE.fullmatch(name):
        check_workspace_name(name)  # the message of the rule users see
        raise InvalidName(f"invalid workspace name {name!r}")
    return name


RAW_BASE = 0x10FF00  # a stored key holds byte 0xNN (not UTF-8) as chr(RAW_BASE + 0xNN)
_ESCAPED = re.compile("[\udc80-\udcff]")  # surrogateescape's undecodable bytes
_STORED_RAW = re.compile("[\U0010ff80-\U0010ffff]")  # from_os's stand-ins for them


def from_os(name: str) -> str:
    """The key (or key component) for a name as the OS gave it, decoded with
    ``surrogateescape`` (mfusepy's paths, sys.argv, os.fsdecode): every undecodable byte
    0xNN (U+DCNN) becomes chr(RAW_BASE + 0xNN). ASCII passes untouched at once.

    Raises:
        IllegalByteSequence: (EILSEQ, exit 2) ``name`` holds one of U+10FF80-U+10FFFF,
            the code points that stand for raw bytes.
    """
    if name.isascii():
        return name
    if _STORED_RAW.search(name):
        raise IllegalByteSequence(
            f"{name!a} holds a code point of U+10FF80-U+10FFFF, which kyfs keeps"
            " for bytes that are not UTF-8"
        )
    return _ESCAPED.sub(lambda m: chr(RAW_BASE + ord(m.group()) - 0xDC00), name)


def to_os(key: str) -> str:
    """The name the OS sees for ``key`` (the inverse of :func:`from_os`), decoded with
    ``surrogateescape``: ``os.fsencode(to_os(key))`` is its bytes."""
    if key.isascii():
        return key
    return _STORED_RAW.sub(lambda m: chr(0xDC00 + ord(m.group()) - RAW_BASE), key)


def shown(key: str) -> str:
    """``key`` as printable text: its raw bytes as ``\\xNN`` (``ls -b`` style), the rest
    as it is."""
    if key.isascii():
        return key
    return os.fsencode(to_os(key)).decode("utf-8", "backslashreplace")


def os_bytes(key: str) -> int:
    """How many bytes ``key`` is as the OS sees it (each stored raw byte is one)."""
    size = len(key.encode("utf-8", "surrogateescape"))
    return size if key.isascii() else size - 3 * len(_STORED_RAW.findall(key))


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Paths from the kernel arrive decoded with surrogateescape: undecodable bytes.
        raise IllegalByteSequence(f"{what} {text!r} is not valid UTF-8") from None


def check_component(name: str) -> str:
    """Return ``name`` when it is a valid key component (one path segment).

    Raises:
        InvalidName: (EINVAL) empty, ``.``, ``..``, a RESERVED name, or contains ``/`` or NUL.
        NameTooLong: (ENAMETOOLONG) over 255 bytes (as the OS counts them: os_bytes).
        IllegalByteSequence: (EILSEQ) undecodable bytes not yet mapped by from_os.
    """
    if name in ("", ".", "..") or SEP in name or "\0" in name:
        raise InvalidName(f"invalid key component {name!r}")
    if name in RESERVED:
        raise InvalidName(f"{name!r} is reserved for the mount's hidden directories")
    _utf8(name, "key component")
    if os_bytes(name) > NAME_MAX:
        raise NameTooLong(f"key component is over {NAME_MAX} bytes: {name[:40]!r}...")
    return name


def check_key(key: str) -> str:
    """Return ``key`` when every component is valid and the whole is at most KEY_MAX bytes.

    Raises:
        InvalidName, NameTooLong, IllegalByteSequence: as check_component; an empty
        key, a leading or trailing ``/`` or ``//`` is InvalidName.
    """
    if not key:
        raise InvalidName("a key cannot be empty")
    for part in key.split(SEP):
        if part == "":
            raise InvalidName(f"invalid key {key!r}: no empty components (leading, trailing or //)")
        check_component(part)
    if len(key) > KEY_MAX // 4 and os_bytes(key) > KEY_MAX:
        raise NameTooLong(f"key is over {KEY_MAX} bytes")
    return key


def valid_key(key: str) -> bool:
    """True when :func:`check_key` would accept ``key``."""
    try:
        check_key(key)
    except InvalidName:  # NameTooLong and IllegalByteSequence too
        return False
    return True


def parent_of(key: str) -> str:
    """The directory holding ``key``: ``"a/b"`` for ``"a/b/c"``, ``""`` for a top-level key."""
    head, _, _ = key.rpartition(SEP)
    return head


def ancestors(key: str) -> list[str]:
    """Every directory above ``key``, outermost first: ``["a", "a/b"]`` for ``"a/b/c"``."""
    parts = key.split(SEP)[:-1]
    return [SEP.join(parts[: i + 1]) for i in range(len(parts))]


def join(directory: str, name: str) -> str:
    """``directory/name``, or ``name`` at the top (``directory == ""``)."""
    return f"{directory}{SEP}{name}" if directory else name


def is_within(key: str, directory: str) -> bool:
    """True when ``key`` is ``directory`` itself or lies below it."""
    return key == directory or key.startswith(directory + SEP)


_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)([smhd]?)")
MAX_DURATION_S = 100 * 365 * 86400  # seconds: the longest TTL or retention kyfs takes (100 years)
MAX_RETENTION_DAYS = 100 * 365  # days of history or archive kept at most (100 years)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"10m"`` -> 600.0 seconds: a number with an optional unit s, m, h or d, above zero
    and at most MAX_DURATION_S (100 years).

    Raises:
        InvalidInput: (exit 2) anything else, zero, or longer than 100 years.
    """
    from kyfs.core.errors import InvalidInput

    match = _DURATION.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise InvalidInput(f"invalid duration {text!r}: use e.g. 30s, 10m, 2h, 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION_S:
        raise InvalidInput(f"duration {text!r} is over the limit of 100 years")
    return seconds
