"""A corpus of hostile names and values, through the real CLI and the mount.

Each is refused with a clear error (or, for odd but valid keys, stored
faithfully); nothing is created outside the data directory, and no database is
left changed by a refused operation.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kyfs.cli import cli
from kyfs.core import nodes as nodes_mod
from kyfs.engine.sqlite.connection import unpack_text
from tests.conftest import Mount

BAD_WORKSPACES = [
    b"..",
    b".",
    b"a/b",
    b"../escape",
    b"/abs",
    b"-leading",
    b"sp ace",
    b"$(touch pwned)",
    b"x;ls",
    b"x" * 65,
    b"",
    b"caf\xc3\xa9",
    b"bad\xff",
]
BAD_KEYS = [
    b"..",
    b".",
    b"/abs",
    b"a//b",
    b"a/../b",
    b"trailing/",
    b"n" * 256,
    b"/".join([b"x" * 200] * 330),  # over 64 KiB (kyfs.core.names.KEY_MAX)
    "x\U0010ff80".encode(),  # a code point kyfs keeps for raw bytes (kyfs.core.names)
    b"",
]
ODD_BUT_VALID_KEYS = [
    "-leading",
    "sp ace",
    "$(touch pwned)",
    "semi;colon|pipe&amp",
    "quote'\"`",
    "*glob?[x]",
    "tab\tin",
    "ünïcødé/日本",
    os.fsdecode(b"bad\xff"),  # not UTF-8: any byte but / and NUL, as on Linux
    os.fsdecode(b"\x80\xfe/caf\xe9"),
    os.fsdecode(b"\xff" * 255),
    "n" * 255,
]


def kyfs(*args: bytes | str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    argv = [a if isinstance(a, bytes) else os.fsencode(a) for a in args]
    return subprocess.run(
        [sys.executable.encode(), b"-m", b"kyfs", *argv],
        input=input,
        capture_output=True,
        timeout=60,
    )


def snapshot(root: Path, data: Path) -> tuple[set[str], dict[str, list[str]]]:
    """Every path under root outside the data directory, and a logical dump of each workspace."""
    outside = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if data not in p.parents and p != data and "pytest" not in p.name
    }
    dumps = {}
    for db in sorted((data / "workspaces").glob("*.db")):
        conn = sqlite3.connect(db)
        conn.create_function("kyfs_text", 1, unpack_text)  # FTS5's content view needs it
        dumps[db.name] = list(conn.iterdump())
        conn.close()
    return outside, dumps


@pytest.fixture
def populated(kyfs_home: Path) -> Path:
    assert kyfs("use", "alpha", "--create").returncode == 0
    assert kyfs("set", "existing", "value").returncode == 0
    return kyfs_home


def test_hostile_workspace_names_are_refused(populated: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path, populated)
    for name in BAD_WORKSPACES:
        for args in (
            [b"create", name],
            [b"use", b"--create", name],
            [b"rename", b"alpha", name],
            [b"set", b"-w", name, b"k", b"v"],
            [b"drop", b"--yes", name],
        ):
            done = kyfs(*args)
            assert done.returncode in (1, 2), (args, done.stderr)
            assert b"Traceback" not in done.stderr, (args, done.stderr)
            assert done.stderr.startswith(b"Error:") or b"Usage:" in done.stderr, done.stderr
    assert snapshot(tmp_path, populated) == before
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_hostile_keys_are_refused(populated: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path, populated)
    for key in BAD_KEYS:
        done = kyfs("set", "--", key, "v")
        assert done.returncode == 2, (key, done.stderr)
        assert b"Traceback" not in done.stderr
        assert done.stderr.startswith(b"Error:"), done.stderr
    assert snapshot(tmp_path, populated) == before


def test_odd_but_valid_keys_are_stored_faithfully(populated: Path) -> None:
    for key in ODD_BUT_VALID_KEYS:
        done = kyfs("set", "--", key, f"value of {key}")
        assert done.returncode == 0, (key, done.stderr)
        assert kyfs("get", "--", key).stdout == os.fsencode(f"value of {key}")
    listed = kyfs("keys", "--json").stdout.decode()
    for key in ODD_BUT_VALID_KEYS:
        if key.isprintable():
            assert key.replace("\t", "\\t").replace('"', '\\"') in listed
    piped = kyfs("keys").stdout.splitlines()  # into a pipe: each name's bytes as they are
    for key in ODD_BUT_VALID_KEYS:
        assert os.fsencode(key) in piped, key


def test_value_over_the_limit_is_efbig_and_changes_nothing(
    populated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodes_mod, "MAX_VALUE_SIZE", 1000)
    result = CliRunner().invoke(cli, ["set", "existing"], input=b"x" * 1001)
    assert result.exit_code == 2
    assert "over the limit" in result.output
    assert kyfs("get", "existing").stdout == b"value"


@pytest.mark.mount
def test_hostile_names_through_the_mount(mounted: Mount, tmp_path: Path) -> None:
    before = snapshot(tmp_path, mounted.home)
    root, ws = mounted.path, mounted.path / "default"
    for name in BAD_WORKSPACES:
        if name in (b"", b".", b"..") or b"/" in name:
            continue  # the kernel resolves these itself
        with pytest.raises(OSError):
            os.mkdir(os.fsencode(root) + b"/" + name)
    for key in (b"n" * 256, b"\xff" * 256, "x\U0010ff80".encode()):
        with pytest.raises(OSError):
            os.open(os.fsencode(ws) + b"/" + key, os.O_WRONLY | os.O_CREAT, 0o644)
    assert sorted(os.listdir(root)) == ["default", "shared"]
    assert os.listdir(ws) == []
    assert snapshot(tmp_path, mounted.home)[1] == before[1]
    for key in ODD_BUT_VALID_KEYS:
        path = ws / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.fsencode(f"value of {key}"))
        got = mounted.kyfs("get", "-w", "default", "--", key)
        assert got.stdout == os.fsencode(f"value of {key}"), key
        cat = subprocess.run(["cat", path], capture_output=True, check=True)
        assert cat.stdout == os.fsencode(f"value of {key}")
