"""Naming rules (pure logic)."""

from __future__ import annotations

import errno
import os

import pytest

from kyfs.core import names
from kyfs.core.errors import IllegalByteSequence, InvalidName, NameTooLong


@pytest.mark.parametrize("name", ["a", "project_alpha", "A1.b-c_d", "9" * 64])
def test_valid_workspace_names(name: str) -> None:
    assert names.check_workspace_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "-x", "_x", "a/b", "a b", "x" * 65, "é", "a\0b", "../etc"]
)
def test_invalid_workspace_names(name: str) -> None:
    with pytest.raises(InvalidName) as info:
        names.check_workspace_name(name)
    assert info.value.errno == errno.EINVAL
    assert info.value.exit_code == 2


@pytest.mark.parametrize("key", ["user.name", "a/b/c", "é/ü", "x" * 255, "-leading", "sp ace"])
def test_valid_keys(key: str) -> None:
    assert names.check_key(key) == key


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", ".", "..", "a/../b", "a/./b", "a\0b"])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidName):
        names.check_key(key)


def test_component_over_255_bytes_is_name_too_long() -> None:
    with pytest.raises(NameTooLong) as info:
        names.check_key("é" * 128)  # 256 bytes of UTF-8 in 128 characters
    assert info.value.errno == errno.ENAMETOOLONG


def test_key_over_key_max_is_name_too_long() -> None:
    deep = "/".join(["x" * 200] * 21)  # 4,220 bytes: over PATH_MAX, reachable by relative paths
    assert names.check_key(deep) == deep
    with pytest.raises(NameTooLong):
        names.check_key("/".join(["x" * 200] * 330))  # over 64 KiB
    with pytest.raises(NameTooLong):
        names.check_key("/".join(["é" * 100] * 330))  # 66,330 bytes in 33,329 characters


def test_undecodable_bytes_are_illegal_sequences() -> None:
    key = b"bad\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(IllegalByteSequence) as info:
        names.check_key(key)
    assert info.value.errno == errno.EILSEQ


def test_path_helpers() -> None:
    assert names.parent_of("a/b/c") == "a/b"
    assert names.parent_of("a") == ""
    assert names.ancestors("a/b/c") == ["a", "a/b"]
    assert names.join("", "x") == "x"
    assert names.join("a", "x") == "a/x"
    assert names.is_within("a/b", "a") and names.is_within("a", "a")
    assert not names.is_within("ab", "a")


RAW_NAMES = [b"caf\xe9", b"\xff" * 255, b"\x80/ok/\xc3\xa9\xfe", b"mixed \xe2\x82 \xe2\x82\xac"]


@pytest.mark.parametrize("raw", RAW_NAMES)
def test_os_names_are_kept_byte_exact(raw: bytes) -> None:
    """Names are bytes on Linux: from_os maps surrogateescape's stand-ins to code points
    both engines store as UTF-8 text, one to one, and to_os gives the bytes back."""
    key = names.from_os(os.fsdecode(raw))
    key.encode("utf-8")  # storable text: no surrogate is left
    assert os.fsencode(names.to_os(key)) == raw
    assert names.os_bytes(key) == len(raw)
    assert names.check_key(key) == key
    assert names.shown(key) == raw.decode("utf-8", "backslashreplace")


def test_the_code_points_kept_for_bytes_are_refused() -> None:
    with pytest.raises(IllegalByteSequence) as info:
        names.from_os("x\U0010ff80")
    assert info.value.errno == errno.EILSEQ
    assert names.from_os("plain/ünïcødé") == "plain/ünïcødé"  # any other text as it is
    with pytest.raises(NameTooLong):
        names.check_key(names.from_os(os.fsdecode(b"\xff" * 256)))
