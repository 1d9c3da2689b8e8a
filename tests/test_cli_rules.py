"""Issue 30 item 4, the smaller misses, each as its users would meet it: negative
durations refused, prefix hits scored, a key never created after it was written, exit
codes as docs/exit-codes.md says, ``KEY@WORKSPACE`` wherever a key is taken,
``kyfs -w NAME mount`` showing that workspace alone, ``--db FILE mount`` refused, and
``use --project`` of a missing directory refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kyfs.cli import cli
from tests.conftest import require_mount


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def alpha(both_engines: str) -> None:
    assert run("create", "alpha").exit_code == 0
    assert run("-w", "alpha", "set", "notes/token", "jwt token value").exit_code == 0
    assert run("-w", "alpha", "set", "notes/tokenizer", "splits words").exit_code == 0


@pytest.mark.usefixtures("alpha")
def test_a_prefix_finds_and_scores_every_word_that_starts_so() -> None:
    for args in (("tok*",), ("--raw", "tok*")):
        done = run("search", *args, "-w", "alpha", "--json")
        hits = [json.loads(line) for line in done.output.splitlines()]
        assert sorted(h["key"] for h in hits) == ["notes/token", "notes/tokenizer"], args
        assert all(h["score"] > 0 for h in hits), hits
    both = [
        json.loads(line)
        for line in run("search", "jwt tok*", "-w", "alpha", "--json").output.splitlines()
    ]
    assert [h["key"] for h in both] == ["notes/token"]


@pytest.mark.usefixtures("alpha")
def test_exit_codes_of_missing_names() -> None:
    assert run("search", "token", "-w", "nosuch").exit_code == 1
    assert run("fsck", "nosuch").exit_code == 1
    assert run("fsck", "alpha", "nosuch").exit_code == 1
    assert run("-w", "alpha", "history", "nosuch").exit_code == 1
    assert run("-w", "alpha", "history", "notes/token").exit_code == 0
    assert run("-w", "alpha", "delete", "notes/token").exit_code == 0
    assert run("-w", "alpha", "history", "notes/token").exit_code == 0  # deleted: still has one


@pytest.mark.usefixtures("alpha")
def test_the_address_form_works_wherever_a_key_is_taken() -> None:
    assert run("create", "beta").exit_code == 0  # the active workspace is another
    assert run("use", "beta").exit_code == 0
    assert "jwt token value" in run("history", "notes/token@alpha", "--json").output
    assert run("ttl", "notes/token@alpha", "1h").exit_code == 0
    assert json.loads(run("ttl", "notes/token@alpha", "--json").output)["expires"]
    assert run("delete", "notes/token@alpha").exit_code == 0
    assert run("restore", "notes/token@alpha").exit_code == 0
    assert run("get", "notes/token@alpha").output == "jwt token value"


def test_a_key_is_never_created_after_it_was_written() -> None:
    assert run("create", "alpha").exit_code == 0
    for n in range(20):
        assert run("-w", "alpha", "set", f"k{n}", "v").exit_code == 0
        shown = json.loads(run("-w", "alpha", "get", f"k{n}", "--json").output)
        assert shown["created"] <= shown["updated"], shown


def test_negative_durations_and_missing_projects_are_refused(tmp_path: Path) -> None:
    assert run("create", "alpha").exit_code == 0
    assert run("drop", "alpha", "--yes").exit_code == 0
    refused = run("trash", "empty", "--older-than", "-1", "--yes")
    assert refused.exit_code == 2
    assert "alpha" in run("trash").output  # nothing was deleted
    before = run("workspaces").output
    missing = run("use", "--project", str(tmp_path / "nonexistent"))
    assert missing.exit_code == 1 and "no such project directory" in missing.output
    assert run("workspaces").output == before  # and no workspace was made


def test_one_workspace_mount_and_db_mount(tmp_path: Path, kyfs_home: Path) -> None:
    require_mount()
    for name in ("alpha", "beta"):
        assert run("create", name).exit_code == 0
    assert run("-w", "alpha", "set", "k", "v").exit_code == 0
    mountpoint = tmp_path / "mnt"
    kyfs = [sys.executable, "-m", "kyfs"]
    db = run("--db", str(kyfs_home / "workspaces" / "alpha.db"), "mount", str(mountpoint))
    assert db.exit_code == 2 and "--db FILE cannot be mounted" in db.output
    assert run("-w", "nosuch", "mount", str(mountpoint)).exit_code == 1
    subprocess.run([*kyfs, "-w", "alpha", "mount", str(mountpoint)], check=True, timeout=60)
    try:
        assert sorted(p.name for p in mountpoint.iterdir()) == ["alpha"]
        assert (mountpoint / "alpha" / "k").read_text() == "v"
        assert not (mountpoint / "beta").exists()
        with pytest.raises(PermissionError):
            (mountpoint / "gamma").mkdir()
        with pytest.raises(PermissionError):
            (mountpoint / "alpha").rename(mountpoint / "zeta")
        (mountpoint / "alpha" / "new").write_text("through the mount")
    finally:
        subprocess.run([*kyfs, "unmount", str(mountpoint)], check=True, timeout=60)
    assert run("-w", "alpha", "get", "new").output == "through the mount"
    assert "gamma" not in run("workspaces").output
