"""Identities (``kyfs --user NAME``) and grants (``kyfs share``): the rules as a table,
then the agent matrix through the CLI and through a real mount, on both engines."""

from __future__ import annotations

import errno
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kyfs.cli import cli
from kyfs.core.errors import NotPermitted, ReadOnly, WorkspaceNotFound
from kyfs.core.identity import MANAGE, READ, WRITE, Grant, Scope
from kyfs.engine.base import Workspace
from kyfs.engine.scoped import READS, WRITES
from tests.conftest import Mount


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


# --- the rules -------------------------------------------------------------------------------
GRANTS = (Grant("alice", "ro", "bob", read_only=True), Grant("alice", "rw", "bob"))
# (identity, name as it writes it, operation) -> stored name, or the error it gets
RULES = {
    ("alice", "notes", READ): "alice~notes",
    ("alice", "notes", MANAGE): "alice~notes",
    ("alice", "shared", WRITE): "shared",
    ("alice", "shared", MANAGE): NotPermitted,
    ("me", "notes", WRITE): "notes",  # the main identity: stored names as before
    ("me", "alice~notes", READ): WorkspaceNotFound,
    ("bob", "alice~notes", READ): WorkspaceNotFound,
    ("bob", "alice~ro", READ): "alice~ro",
    ("bob", "alice~ro", WRITE): ReadOnly,
    ("bob", "alice~ro", MANAGE): NotPermitted,
    ("bob", "alice~rw", WRITE): "alice~rw",
    ("bob", "alice~rw", MANAGE): NotPermitted,
    ("bob", "bob~x", WRITE): "bob~x",  # one's own, named in full
    ("carol", "alice~ro", READ): WorkspaceNotFound,  # a grant is to one identity
    ("bob", "me~notes", READ): WorkspaceNotFound,
}


@pytest.mark.parametrize(("case", "expected"), list(RULES.items()), ids=str)
def test_the_rules_table(case: tuple[str, str, str], expected: object) -> None:
    identity, name, op = case
    scope = Scope(identity, "me", GRANTS)
    if isinstance(expected, str):
        assert scope.stored(name, op) == expected
        assert scope.visible(expected) in (name, name.partition("~")[2])
    else:
        with pytest.raises(expected):  # type: ignore[call-overload]
            scope.stored(name, op)


def test_listing_shows_only_ones_own_shared_and_granted() -> None:
    stored = ["notes", "shared", "alice~notes", "alice~ro", "alice~rw", "bob~x"]
    seen = {who: Scope(who, "me", GRANTS) for who in ("me", "alice", "bob", "carol")}
    assert {s: seen["bob"].visible(s) for s in stored} == {
        "notes": None, "shared": "shared", "alice~notes": None,
        "alice~ro": "alice~ro", "alice~rw": "alice~rw", "bob~x": "x",
    }  # fmt: skip
    assert [seen["me"].visible(s) for s in stored] == ["notes", "shared", None, None, None, None]
    assert [seen["carol"].visible(s) for s in stored] == [None, "shared", None, None, None, None]


def test_every_workspace_member_is_a_read_or_a_write() -> None:
    """A member added to the Workspace protocol must be classified, or a read-only
    grant would pass it through unchecked."""
    members = {
        name
        for name, _ in inspect.getmembers(Workspace)
        if not name.startswith("_") and name not in ("lock",)
    } | set(Workspace.__annotations__)
    assert members - READS - WRITES == set()
    assert set() == READS & WRITES


# --- the agent matrix, through the CLI -------------------------------------------------------
SECRET = "zebra-7f3a"  # alice's private value and search word


def _as(user: str, *args: str) -> Result:
    return run("--user", user, *args)


def _alice_data() -> None:
    for name in ("private", "ro", "rw"):
        assert _as("alice", "create", name).exit_code == 0
        done = _as("alice", "set", "secret", f"{SECRET} of {name}", "-w", name)
        assert done.exit_code == 0, done.output


def _alice_values() -> dict[str, str]:
    return {
        name: _as("alice", "get", "secret", "-w", name).output for name in ("private", "ro", "rw")
    }


# (what bob runs, with NAME for the workspace as bob writes it)
READ_COMMANDS = [
    ("get", "secret", "-w", "NAME"),
    ("get", "secret@NAME"),
    ("keys", "-w", "NAME"),
    ("history", "secret", "-w", "NAME"),
    ("export", "-w", "NAME"),
    ("workspaces",),
    ("search", SECRET, "--all"),
]
WRITE_COMMANDS = [
    ("set", "secret", "overwritten", "-w", "NAME"),
    ("delete", "secret", "-w", "NAME"),
    ("ttl", "secret", "1s", "-w", "NAME"),
]
MANAGE_COMMANDS = [
    ("drop", "NAME", "--yes"),
    ("rename", "NAME", "taken"),
    ("share", "NAME", "--with", "carol"),
]


def _bob(command: tuple[str, ...], name: str) -> Result:
    return _as("bob", *(part.replace("NAME", name) for part in command))


@pytest.mark.usefixtures("both_engines")
def test_agent_matrix_through_the_cli() -> None:
    _alice_data()
    before = _alice_values()
    assert all(SECRET in value for value in before.values())
    leaks = []
    # Without a grant, bob's reads find nothing of alice's, under any name bob could try.
    for command in READ_COMMANDS:
        for name in ("private", "alice~private"):
            done = _bob(command, name)
            if SECRET in done.output:
                leaks.append((command, name, done.output))
            names_one = any("NAME" in part for part in command)
            if names_one and (done.exit_code != 1 or "not found" not in done.output):
                leaks.append((command, name, done.exit_code, done.output))
            if not names_one and (done.exit_code != 0 or "private" in done.output):
                leaks.append((command, name, done.exit_code, done.output))
    for command in WRITE_COMMANDS + MANAGE_COMMANDS:
        done = _bob(command, "alice~private")
        if done.exit_code != 1 or "not found" not in done.output:  # as if it did not exist
            leaks.append((command, done.exit_code, done.output))
    assert run("--user", "alice", "share", "ro", "--with", "bob", "--read-only").exit_code == 0
    assert run("--user", "alice", "share", "rw", "--with", "bob").exit_code == 0
    # The read-only grant: every read works, every write is EROFS's exit 6.
    for command in READ_COMMANDS[:5]:
        done = _bob(command, "alice~ro")
        if done.exit_code != 0 or ("secret" not in done.output and SECRET not in done.output):
            leaks.append(("ro read", command, done.exit_code, done.output))
    for command in WRITE_COMMANDS:
        done = _bob(command, "alice~ro")
        if done.exit_code != 6 or "read-only" not in done.output:
            leaks.append(("ro write", command, done.exit_code, done.output))
    for grant in ("alice~ro", "alice~rw"):
        for command in MANAGE_COMMANDS:
            done = _bob(command, grant)
            if done.exit_code != 6:
                leaks.append(("manage", command, grant, done.exit_code, done.output))
    # search --all covers the grants, never the private workspace
    found = _as("bob", "search", SECRET, "--all").output
    assert "alice~ro" in found and "alice~rw" in found and "private" not in found
    assert not leaks, leaks
    assert _alice_values() == before  # nothing bob ran changed alice's data
    # The read-write grant writes; unshare ends it at once.
    assert _bob(WRITE_COMMANDS[0], "alice~rw").exit_code == 0
    assert "overwritten" in _as("alice", "get", "secret", "-w", "rw").output
    assert run("--user", "alice", "unshare", "rw").exit_code == 0
    assert _bob(READ_COMMANDS[0], "alice~rw").exit_code == 1
    # bob's own workspace of the same name is bob's, and shared is everyone's
    assert _as("bob", "set", "secret", "bob's", "-w", "private").exit_code == 1  # none yet
    assert _as("bob", "create", "private").exit_code == 0
    assert _as("bob", "set", "secret", "bob's", "-w", "private").exit_code == 0
    assert _as("alice", "get", "secret", "-w", "private").output == before["private"]
    assert _as("bob", "set", "note", "hello", "-w", "shared").exit_code == 0
    assert _as("alice", "get", "note", "-w", "shared").output == "hello"
    # whole-data-directory commands are the main identity's
    assert _as("bob", "backup", "create", "-q").exit_code == 6


def test_grants_follow_a_rename_and_end_with_a_drop() -> None:
    _alice_data()
    assert _as("alice", "share", "ro", "--with", "bob", "--read-only").exit_code == 0
    assert _as("alice", "rename", "ro", "ro2").exit_code == 0
    assert _as("bob", "get", "secret", "-w", "alice~ro2").exit_code == 0
    assert _as("bob", "get", "secret", "-w", "alice~ro").exit_code == 1
    assert _as("alice", "drop", "ro2", "--yes").exit_code == 0
    assert _as("alice", "create", "ro2").exit_code == 0  # a new workspace of that name
    assert _as("bob", "keys", "-w", "alice~ro2").exit_code == 1  # is not shared
    assert _as("alice", "trash", "restore", "ro2", "--as", "ro3").exit_code == 0
    assert _as("bob", "trash", "restore", "ro2").exit_code == 1  # alice's trash is hers


def test_the_registry_lists_identities_and_grants() -> None:
    _alice_data()
    assert _as("bob", "create", "scratch").exit_code == 0
    assert _as("alice", "share", "ro", "--with", "bob", "--read-only").exit_code == 0
    listed = {u["name"]: u for u in json.loads(run("users", "--json").output)}
    assert listed["alice"]["workspaces"] == ["private", "ro", "rw"]
    assert listed["bob"]["workspaces"] == ["scratch"]
    assert listed["bob"]["granted"] == [{"workspace": "alice~ro", "read_only": True}]
    assert [u for u in listed.values() if u["main"]]


def test_a_hostile_grants_file_is_read_as_untrusted(kyfs_home: Path) -> None:
    _alice_data()
    (kyfs_home / "grants.toml").write_text(
        '[[grant]]\nowner = "../x"\nworkspace = "private"\ngrantee = "bob"\n'
        '[[grant]]\nowner = "alice"\nworkspace = 7\ngrantee = "bob"\n'
        'grant2 = "x"\n'
    )
    assert _as("bob", "get", "secret", "-w", "alice~private").exit_code == 1
    (kyfs_home / "grants.toml").write_text("not toml [")
    done = _as("bob", "workspaces")
    assert done.exit_code == 2 and "grants.toml" in done.output and "Traceback" not in done.output


# --- the agent matrix, through a mount made for one identity -------------------------------
def _errno_of(path: Path, call: Callable[[Path], object]) -> int:
    try:
        call(path)
    except OSError as exc:
        return exc.errno or 0
    return 0


def _write(path: Path) -> None:
    path.write_text("overwritten")


@pytest.mark.mount
@pytest.mark.usefixtures("both_engines")
def test_a_mount_for_one_identity_shows_only_what_it_may(
    mount_factory: Callable[..., Mount], monkeypatch: pytest.MonkeyPatch
) -> None:
    _alice_data()
    assert _as("alice", "share", "ro", "--with", "bob", "--read-only").exit_code == 0
    assert _as("bob", "create", "mine").exit_code == 0
    mount = mount_factory(flags=("--user", "bob"))
    root = mount.path
    assert sorted(os.listdir(root)) == ["alice~ro", "mine", "shared"]
    grep = subprocess.run(["grep", "-r", SECRET, str(root)], capture_output=True, text=True)
    assert grep.stdout.count(SECRET) == 1 and "alice~ro" in grep.stdout  # the grant only
    for name in ("private", "alice~private", "alice~rw"):
        assert _errno_of(root / name / "secret", Path.read_text) == errno.ENOENT
    for name in ("alice~private", "alice~rw"):  # nobody makes another's workspace
        assert _errno_of(root / name, os.mkdir) == errno.EPERM, name
    os.mkdir(root / "private")  # bob's own, of the same name as alice's
    assert os.listdir(root / "private") == []
    # read-only: reads work, writes are EROFS, nothing changes
    assert SECRET in (root / "alice~ro" / "secret").read_text()
    for call in (_write, Path.unlink, lambda p: (p.parent / "new").write_text("x")):
        assert _errno_of(root / "alice~ro" / "secret", call) == errno.EROFS
    assert _errno_of(root / "alice~ro", lambda p: p.rename(p.parent / "gone")) == errno.EPERM
    cp = subprocess.run(["cp", "/etc/hostname", str(root / "alice~ro" / "x")], capture_output=True)
    assert cp.returncode != 0
    # a grant made or ended while mounted shows at once (the watcher's next round)
    assert _as("alice", "share", "rw", "--with", "bob").exit_code == 0
    deadline = time.monotonic() + 10
    while "alice~rw" not in os.listdir(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    (root / "alice~rw" / "secret").write_text("from bob\n")
    assert _as("alice", "get", "secret", "-w", "rw").output == "from bob\n"
    assert _as("alice", "unshare", "rw").exit_code == 0
    deadline = time.monotonic() + 10
    while "alice~rw" in os.listdir(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _errno_of(root / "alice~rw" / "secret", Path.read_text) == errno.ENOENT
    assert SECRET in _as("alice", "get", "secret", "-w", "ro").output  # untouched
    assert SECRET in _as("alice", "get", "secret", "-w", "private").output
    # bob's own files work as anywhere
    subprocess.run(["cp", "-a", "/etc/hostname", str(root / "mine" / "h")], check=True)
    assert _as("bob", "get", "h", "-w", "mine").output == Path("/etc/hostname").read_text()


def test_what_an_identity_used_before_identities_stays_within_its_reach(
    kyfs_home: Path,
) -> None:
    """A data directory from before identities: every workspace was everyone's and the
    state files named the active ones. The first command grants each identity what it
    used, once; a workspace it did not use stays the main identity's."""
    for name in ("proj", "default", "other"):
        assert run("create", name).exit_code == 0
    assert run("set", "k", "v", "-w", "proj").exit_code == 0
    users = kyfs_home / "users"
    users.mkdir(exist_ok=True)
    (users / "alice.toml").write_text('active_workspace = "proj"\n')
    (users / "bob.toml").write_text('active_cursor = ""\n')  # no active one: default
    (kyfs_home / "grants.toml").unlink(missing_ok=True)  # as before identities
    assert _as("alice", "get", "k").output == "v"  # proj, as before
    assert _as("alice", "keys", "-w", "other").exit_code == 1  # never used: not hers
    main = json.loads(run("users", "--json").output)
    granted = {u["name"]: u["granted"] for u in main}
    assert granted["alice"] == [
        {"workspace": next(u["name"] for u in main if u["main"]) + "~proj", "read_only": False}
    ]
    assert [g["workspace"].split("~")[1] for g in granted["bob"]] == ["default"]
    # once: a workspace alice uses after that is hers
    assert _as("alice", "use", "proj2", "--create").exit_code == 0
    assert _as("alice", "set", "mine", "1").exit_code == 0
    assert run("keys", "-w", "proj2").exit_code == 1
    again = {u["name"]: u["granted"] for u in json.loads(run("users", "--json").output)}
    assert again == granted  # no grant added, none of proj2


def test_a_rename_moves_only_the_renamers_active_workspace() -> None:
    assert _as("alice", "use", "notes", "--create").exit_code == 0
    assert _as("bob", "use", "notes", "--create").exit_code == 0
    assert _as("carol", "use", "other", "--create").exit_code == 0
    assert _as("alice", "share", "notes", "--with", "carol").exit_code == 0
    assert _as("carol", "use", "alice~notes").exit_code == 0
    assert _as("alice", "rename", "notes", "notes2").exit_code == 0
    active = {
        who: [w["name"] for w in json.loads(_as(who, "workspaces", "--json").output) if w["active"]]
        for who in ("alice", "bob", "carol")
    }
    assert active == {"alice": ["notes2"], "bob": ["notes"], "carol": ["alice~notes2"]}


def test_whole_directory_commands_and_outright_files_are_the_main_identitys(
    kyfs_home: Path, tmp_path: Path
) -> None:
    _alice_data()
    scoped = tmp_path / "scoped.db"
    import sqlite3

    with sqlite3.connect(scoped) as conn:
        conn.execute("CREATE TABLE kvstore (scope TEXT, key TEXT, value TEXT)")
        conn.execute("INSERT INTO kvstore VALUES ('alice~private', 'planted', 'by bob')")
    for args in (("migrate", "analyze", str(scoped)), ("migrate", "run", str(scoped))):
        done = _as("bob", *args)
        assert done.exit_code == 6, (args, done.output)
    own = kyfs_home / "workspaces" / "alice~private.db"
    for args in (("get", "secret"), ("set", "planted", "x")):
        done = _as("bob", "--db", str(own), *args)
        assert done.exit_code == 6 and SECRET not in done.output, done.output
    assert _as("alice", "keys", "-w", "private").output.split() == ["secret"]
    # completion lists what the identity sees
    env = {**os.environ, "_KYFS_COMPLETE": "bash_complete", "COMP_CWORD": "4"}
    env["COMP_WORDS"] = "kyfs --user bob drop "
    offered = subprocess.run(
        [sys.executable, "-m", "kyfs"], env=env, capture_output=True, text=True, check=False
    ).stdout
    assert "private" not in offered and "shared" in offered, offered


def test_logname_makes_no_one_the_main_identity() -> None:
    assert run("create", "mine").exit_code == 0
    assert run("set", "k", SECRET, "-w", "mine").exit_code == 0
    env = {**os.environ, "LOGNAME": "bob", "USER": "bob"}
    env.pop("KYFS_USER", None)
    done = subprocess.run(
        [sys.executable, "-m", "kyfs", "get", "k", "-w", "mine"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and SECRET in done.stdout  # still the login's own
    env["KYFS_USER"] = "bob"
    done = subprocess.run(
        [sys.executable, "-m", "kyfs", "get", "k", "-w", "mine"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and SECRET not in done.stdout


def test_repair_and_compact_skip_what_the_identity_may_only_read() -> None:
    _alice_data()
    assert _as("alice", "share", "ro", "--with", "bob", "--read-only").exit_code == 0
    assert _as("bob", "create", "mine").exit_code == 0
    for args in (("fsck", "--repair", "--json"), ("compact", "--all", "--json")):
        done = _as("bob", *args)
        assert done.exit_code == 0, (args, done.output)
        assert "alice~ro" not in done.output
    checked = json.loads(_as("bob", "fsck", "--json").output)
    assert "alice~ro" in json.dumps(checked)  # a check only reads
