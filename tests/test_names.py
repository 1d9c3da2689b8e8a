"""Naming rules (pure logic)."""

from __future__ import annotations

import errno

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
