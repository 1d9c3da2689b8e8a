"""Untrusted SQLite files never escape, hang or run as kyfs's own (issue 13, classes 1, 2,
5, 6, 7): tampered backups, a dropped-in workspace file, exports. Each test checks the
documented exit code, that nothing changed outside KYFS_HOME (or the target given), and
that every workspace's content is unchanged after the refused operation.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kyfs.platform import paths
from tests.conftest import stored_values


def kyfs(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "kyfs", *args], capture_output=True, timeout=timeout, check=False
    )


def tree(top: Path) -> dict[str, bytes]:
    """Every file below ``top`` with its content (links as their target)."""
    found = {}
    for path in sorted(top.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(top))] = os.readlink(path).encode()
        elif path.is_file():
            found[str(path.relative_to(top))] = path.read_bytes()
    return found


@pytest.fixture
def backup(tmp_path: Path, kyfs_home: Path) -> Path:
    """A real backup of workspaces ``alpha`` (two keys) and ``shared``."""
    assert kyfs("create", "alpha").returncode == 0
    assert kyfs("set", "-w", "alpha", "k1", "one").returncode == 0
    assert kyfs("set", "-w", "alpha", "dir/k2", "two").returncode == 0
    archive = tmp_path / "good.tar.gz"
    done = kyfs("backup", "create", "-o", str(archive), "--quiet")
    assert done.returncode == 0, done.stderr
    return archive


def tamper(archive: Path, workspace: str, statements: list[str], out: Path) -> Path:
    """A copy of ``archive`` whose ``workspace`` file ran ``statements``, with a manifest
    that matches again (checksums, sizes, key counts): what an attacker can make."""
    work = out.parent / (out.name + ".d")
    work.mkdir()
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(work, filter="data")
    db = work / "workspaces" / f"{workspace}.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for sql in statements:
        conn.execute(sql)
    try:
        keys = conn.execute(
            "SELECT count(*) FROM entries e JOIN nodes n ON n.id = e.node WHERE n.kind != 16384"
        ).fetchone()[0]
    except sqlite3.Error:
        keys = None
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    manifest = json.loads((work / "manifest.json").read_text())
    for item in manifest["files"]:
        if item["path"] == f"workspaces/{workspace}.db":
            item["sha256"] = hashlib.sha256(db.read_bytes()).hexdigest()
            item["size"] = db.stat().st_size
            if keys is not None:
                item["keys"] = keys
    (work / "manifest.json").write_text(json.dumps(manifest))
    with tarfile.open(out, "w:gz") as tar:
        tar.add(work / "manifest.json", arcname="manifest.json")
        for item in manifest["files"]:
            tar.add(work / item["path"], arcname=item["path"])
    return out


def refused_restore(archive: Path, home: Path, outside: Path) -> subprocess.CompletedProcess[bytes]:
    """Restore ``archive`` with --force over the current data; assert nothing changed."""
    before_values = {name: stored_values(name) for name in ("alpha", "shared")}
    before_outside = tree(outside)
    done = kyfs("backup", "restore", str(archive), "--force", timeout=30)
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr
    assert {name: stored_values(name) for name in ("alpha", "shared")} == before_values
    assert tree(outside) == before_outside
    return done


def test_a_backup_with_escaping_keys_is_refused(
    backup: Path, tmp_path: Path, kyfs_home: Path
) -> None:
    hostile = tamper(
        backup,
        "alpha",
        [
            "INSERT INTO entries (key, parent, node) SELECT '../../x', '../..', node"
            " FROM entries WHERE key = 'k1'",
            "INSERT INTO entries (key, parent, node) SELECT '/abs/path', '/abs', node"
            " FROM entries WHERE key = 'k1'",
        ],
        tmp_path / "escape.tar.gz",
    )
    done = refused_restore(hostile, kyfs_home, tmp_path)
    assert b"naming rules" in done.stderr


def test_a_backup_whose_table_is_a_recursive_view_is_refused_at_once(
    backup: Path, tmp_path: Path, kyfs_home: Path
) -> None:
    hostile = tamper(
        backup,
        "alpha",
        [
            "ALTER TABLE entries RENAME TO entries_real",
            "CREATE VIEW entries AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL"
            " SELECT n + 1 FROM r) SELECT printf('k%d', n) AS key, '' AS parent, 1 AS node"
            " FROM r ORDER BY random()",
        ],
        tmp_path / "view.tar.gz",
    )
    done = refused_restore(hostile, kyfs_home, tmp_path)  # a hang fails on its timeout
    assert b"view" in done.stderr


def test_a_backup_with_an_extra_trigger_is_refused(
    backup: Path, tmp_path: Path, kyfs_home: Path
) -> None:
    hostile = tamper(
        backup,
        "alpha",
        ["CREATE TRIGGER wipe AFTER INSERT ON history BEGIN DELETE FROM entries; END"],
        tmp_path / "trigger.tar.gz",
    )
    done = refused_restore(hostile, kyfs_home, tmp_path)
    assert b"trigger" in done.stderr


def test_a_backup_from_a_newer_kyfs_is_refused_and_not_left_behind(
    backup: Path, tmp_path: Path, kyfs_home: Path
) -> None:
    hostile = tamper(backup, "alpha", ["PRAGMA user_version = 99"], tmp_path / "newer.tar.gz")
    assert kyfs("drop", "alpha", "--yes").returncode == 0
    done = kyfs("backup", "restore", str(hostile), "-w", "alpha")
    assert done.returncode == 2 and b"newer" in done.stderr
    assert not paths.workspace_file("alpha").exists()  # nothing half restored


def test_a_full_restore_replaces_shared_too(backup: Path, kyfs_home: Path) -> None:
    assert kyfs("set", "-w", "alpha", "k1", "changed").returncode == 0
    assert kyfs("set", "-w", "shared", "s", "later").returncode == 0
    done = kyfs("backup", "restore", str(backup), "--force")
    assert done.returncode == 0, done.stderr
    assert stored_values("alpha") == {"k1": b"one", "dir/k2": b"two"}
    assert stored_values("shared") == {}


def test_a_dropped_in_file_with_a_trigger_never_runs_it(tmp_path: Path, kyfs_home: Path) -> None:
    assert kyfs("create", "good").returncode == 0
    assert kyfs("set", "-w", "good", "k", "v").returncode == 0
    assert kyfs("create", "evil").returncode == 0
    assert kyfs("set", "-w", "evil", "a", "1").returncode == 0
    conn = sqlite3.connect(paths.workspace_file("evil"), isolation_level=None)
    conn.execute("CREATE TRIGGER wipe AFTER INSERT ON history BEGIN DELETE FROM entries; END")
    conn.close()
    done = kyfs("set", "-w", "evil", "b", "2")
    assert done.returncode == 4 and b"trigger" in done.stderr
    conn = sqlite3.connect(paths.workspace_file("evil"))
    assert conn.execute("SELECT key FROM entries WHERE key = 'a'").fetchone() == ("a",)
    conn.close()
    listing = kyfs("workspaces")  # the others are still listed; the bad one is reported
    assert listing.returncode == 4
    assert b"good" in listing.stdout and b"evil" in listing.stderr


def test_fsck_flags_escaping_keys_and_repair_never_makes_dot_dot(kyfs_home: Path) -> None:
    assert kyfs("create", "w").returncode == 0
    assert kyfs("set", "-w", "w", "k", "v").returncode == 0
    conn = sqlite3.connect(paths.workspace_file("w"), isolation_level=None)
    conn.execute(
        "INSERT INTO entries (key, parent, node) SELECT '../x', '..', node FROM entries"
        " WHERE key = 'k'"
    )
    conn.close()
    done = kyfs("fsck", "w")
    assert done.returncode == 4 and b"naming rules" in done.stdout + done.stderr
    done = kyfs("fsck", "w", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    conn = sqlite3.connect(paths.workspace_file("w"))
    keys = [row[0] for row in conn.execute("SELECT key FROM entries")]
    conn.close()
    assert keys == ["k"]


def test_export_never_writes_outside_and_never_sets_special_bits(
    tmp_path: Path, kyfs_home: Path
) -> None:
    assert kyfs("create", "w").returncode == 0
    assert kyfs("set", "-w", "w", "a/file", "x").returncode == 0
    conn = sqlite3.connect(paths.workspace_file("w"), isolation_level=None)
    conn.execute("UPDATE nodes SET mode = 2559 WHERE kind = 32768")  # 04777
    conn.close()
    target = tmp_path / "out"
    target.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, target / "a")  # a link planted where a directory will go
    done = kyfs("export", "-w", "w", "--format", "dir", "-o", str(target))
    assert done.returncode == 2 and b"outside" in done.stderr
    assert list(outside.iterdir()) == []
    os.unlink(target / "a")
    assert kyfs("export", "-w", "w", "--format", "dir", "-o", str(target)).returncode == 0
    mode = stat.S_IMODE((target / "a" / "file").stat().st_mode)
    assert mode == 0o777 & mode and not mode & 0o7000


def test_backups_and_exports_are_private_whatever_the_umask(
    tmp_path: Path, kyfs_home: Path
) -> None:
    assert kyfs("create", "default").returncode == 0
    assert kyfs("set", "secret", "value").returncode == 0
    old = os.umask(0)
    try:
        archive = tmp_path / "b.tar.gz"
        assert kyfs("backup", "create", "-o", str(archive), "--quiet").returncode == 0
        export = tmp_path / "e.jsonl"
        assert kyfs("export", "-o", str(export)).returncode == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert stat.S_IMODE(export.stat().st_mode) == 0o600


@pytest.mark.parametrize("created", ['"yesterday"', "1.5", "-1", "99999999999999999999", "true"])
def test_imported_times_out_of_range_are_refused(
    created: str, tmp_path: Path, kyfs_home: Path
) -> None:
    assert kyfs("create", "default").returncode == 0
    source = tmp_path / "in.jsonl"
    source.write_text(f'{{"key": "k", "value": "v", "created_ns": {created}}}\n')
    done = kyfs("import", str(source))
    assert done.returncode == 2 and b"Traceback" not in done.stderr
    assert stored_values("default") == {}


# --- numbers, bombs, reserved names, codes (classes 3, 4, 8, 9) ---------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("set", "k", "v", "--ttl", "999999999999d"),
        ("set", "k", "v", "--ttl", "1e400"),
        ("retention", "--days", "1000000"),
        ("retention", "--versions", "-1"),
        ("create", "cache", "--ttl", "10000000000000000000000000"),
        ("ttl", "k", "nan"),
        ("set", ".versions/x", "v"),
        ("set", "a/.search", "v"),
        ("search", "--raw", '"'),
        ("search", "--raw", "AND AND"),
    ],
)
def test_numbers_and_names_out_of_range_are_refused_whole(
    args: tuple[str, ...], kyfs_home: Path
) -> None:
    assert kyfs("create", "default").returncode == 0
    assert kyfs("set", "k", "before").returncode == 0
    done = kyfs(*args)
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr and b"Error: " in done.stderr
    assert stored_values("default") == {"k": b"before"}
    assert kyfs("set", "k", "after").returncode == 0  # the workspace still takes writes
    assert stored_values("default") == {"k": b"after"}


def test_a_retention_past_its_range_in_a_file_never_breaks_writes(kyfs_home: Path) -> None:
    """Settings written by another tool (or an older kyfs) are read as the defaults."""
    assert kyfs("create", "w").returncode == 0
    conn = sqlite3.connect(paths.workspace_file("w"), isolation_level=None)
    conn.execute("INSERT INTO meta (name, value) VALUES ('history_days', '1e300')")
    conn.execute("INSERT INTO meta (name, value) VALUES ('ttl_s', '1e300')")
    conn.close()
    for n in range(40):  # past the pruning interval
        assert kyfs("set", "-w", "w", "k", str(n)).returncode == 0
    assert stored_values("w") == {"k": b"39"}


def test_a_gzip_bomb_in_a_backup_is_refused_before_it_is_written(
    backup: Path, tmp_path: Path, kyfs_home: Path
) -> None:
    work = tmp_path / "bomb"
    work.mkdir()
    with tarfile.open(backup, "r:gz") as tar:
        tar.extractall(work, filter="data")
    big = work / "workspaces" / "alpha.db"
    with big.open("wb") as handle:  # 256 MiB of zeros: a few hundred KiB of gzip
        handle.truncate(256 * 1024**2)
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:  # the manifest still says the small size
        tar.add(work / "manifest.json", arcname="manifest.json")
        for path in sorted((work / "workspaces").iterdir()):
            tar.add(path, arcname=f"workspaces/{path.name}")
    spill = paths.spill_dir()
    done = kyfs("backup", "verify", str(bomb))
    assert done.returncode == 2 and b"size" in done.stderr
    leftovers = sum(p.stat().st_size for p in spill.rglob("*") if p.is_file())
    assert leftovers < 1024**2


@pytest.mark.parametrize(
    "manifest",
    ["[]", '{"format": "kyfs-backup", "version": 1, "files": [1]}',
     '{"format": "kyfs-backup", "version": 1, "files": [{"path": "../x", "sha256": "0",'
     ' "size": 1}]}',
     '{"format": "kyfs-backup", "version": 1, "files": "no"}'],
)  # fmt: skip
def test_malformed_manifests_are_one_line_errors(manifest: str, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(manifest)
    archive = tmp_path / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "manifest.json", arcname="manifest.json")
    done = kyfs("backup", "verify", str(archive))
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr


def test_a_kycli_value_that_inflates_past_its_limit_is_refused(
    tmp_path: Path, kyfs_home: Path
) -> None:
    import base64
    import zlib

    from kyfs.core.errors import InvalidInput
    from kyfs.transfer.sources import VALUE_MAX, decode_kycli_value

    bomb = b"cmp:zlib:" + base64.b64encode(zlib.compress(bytes(VALUE_MAX + 1), 9))
    with pytest.raises(InvalidInput):
        decode_kycli_value(bomb.decode(), None)
    fine = b"cmp:zlib:" + base64.b64encode(zlib.compress(b"hello"))
    assert decode_kycli_value(fine.decode(), None) == b"hello"


def test_a_kycli_file_whose_table_is_a_recursive_view_is_refused(
    tmp_path: Path, kyfs_home: Path
) -> None:
    source = tmp_path / "kydata.db"
    conn = sqlite3.connect(source)
    conn.execute(
        "CREATE VIEW kvstore AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1"
        " FROM r) SELECT printf('k%d', n) AS key, 'v' AS value FROM r ORDER BY random()"
    )
    conn.close()
    done = kyfs("migrate", "kycli", str(source), "--yes", "--quiet", timeout=60)  # no hang
    assert done.returncode == 2 and b"view" in done.stderr, done.stderr


def test_stray_files_in_the_workspaces_folder_are_reported_and_passed_over(
    kyfs_home: Path,
) -> None:
    assert kyfs("create", "good").returncode == 0
    folder = paths.workspaces_dir()
    (folder / "junk.db").write_bytes(b"garbage" * 100)
    (folder / "bad name.db").write_bytes(b"")
    os.symlink("/etc/passwd", folder / "pw.db")
    listing = kyfs("workspaces")
    assert b"good" in listing.stdout and b"Traceback" not in listing.stderr
    assert b"junk" in listing.stderr and b"pw.db" in listing.stderr
    done = kyfs("fsck")
    assert done.returncode == 4 and b"Traceback" not in done.stderr
    assert b"good: ok" in done.stdout and b"pw.db" in done.stdout
    assert Path("/etc/passwd").stat().st_size > 0  # the link's target was never touched


@pytest.mark.parametrize(
    "case",
    ["config-not-utf8", "config-retention-text", "home-is-a-file", "mount-on-a-file", "exec-big"],
)
def test_odd_environments_are_one_line_errors(
    case: str, tmp_path: Path, kyfs_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert kyfs("create", "default").returncode == 0
    args: tuple[str, ...] = ("keys",)
    expected = {2}
    if case == "config-not-utf8":
        paths.config_file().write_bytes(b'x = "\xff"\n')
    elif case == "config-retention-text":
        paths.config_file().write_text('archive_retention_days = "lots"\n')
    elif case == "home-is-a-file":
        home = tmp_path / "plain-file"
        home.write_text("")
        monkeypatch.setenv("KYFS_HOME", str(home))
        expected = {2, 4}
    elif case == "mount-on-a-file":
        target = tmp_path / "plain-file"
        target.write_text("")
        args, expected = ("mount", str(target)), {5}
    else:
        big = subprocess.run(
            [sys.executable, "-m", "kyfs", "set", "BIG"], input=b"a" * 200_000, check=False
        )
        assert big.returncode == 0
        assert kyfs("set", "OK", "fine").returncode == 0
        args, expected = ("exec", "--", "sh", "-c", 'test "$OK" = fine && test -z "$BIG"'), {0}
    done = kyfs(*args)
    assert done.returncode in expected, done.stderr
    assert b"Traceback" not in done.stderr


def test_kycli_keys_that_become_one_kyfs_key_are_both_kept_and_reported(
    tmp_path: Path, kyfs_home: Path
) -> None:
    source = tmp_path / "kydata.db"
    conn = sqlite3.connect(source)
    conn.execute("CREATE TABLE kvstore (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO kvstore VALUES ('%2Fx', 'valid as it is'), ('/x', 'encoded')")
    conn.commit()
    conn.close()
    plan = kyfs("migrate", "analyze", str(source), "--json")
    done = kyfs("migrate", "kycli", str(source), "--yes", "--quiet")
    assert done.returncode == 0, done.stderr
    assert b"collides" in done.stdout + done.stderr or b"collides" in plan.stdout
    values = stored_values("default")
    assert values["%2Fx"] == b"valid as it is" and values["%2Fx~2"] == b"encoded"


# --- through the mount ----------------------------------------------------------------------
@pytest.mark.mount
def test_a_hostile_workspace_file_under_a_running_mount(
    mount_factory: object, kyfs_home: Path
) -> None:
    import errno as errnos

    from tests.conftest import Mount

    assert kyfs("create", "good").returncode == 0
    assert kyfs("set", "-w", "good", "k", "v").returncode == 0
    assert kyfs("create", "evil").returncode == 0
    assert kyfs("set", "-w", "evil", "a", "1").returncode == 0
    conn = sqlite3.connect(paths.workspace_file("evil"), isolation_level=None)
    conn.execute("CREATE TRIGGER wipe AFTER INSERT ON history BEGIN DELETE FROM entries; END")
    conn.close()
    mount = mount_factory()  # type: ignore[operator]
    assert isinstance(mount, Mount)
    with pytest.raises(OSError) as info:
        os.listdir(mount.path / "evil")
    assert info.value.errno == errnos.EIO
    assert (mount.path / "good" / "k").read_bytes() == b"v"  # the others are served
    ws = mount.path / "good"
    (ws / "d").mkdir()
    for path, call, wanted in [
        (ws / "d", lambda p: os.setxattr(p, "user.kyfs.ttl", b"10m"), errnos.ENOTSUP),
        (mount.path / ".kyfs" / "metrics", lambda p: os.getxattr(p, "user.kyfs.ttl"), 61),
        (ws / ".versions" / "x", lambda p: os.mkdir(p), errnos.EROFS),
        (ws / "d" / ".versions", lambda p: os.mkdir(p), errnos.EINVAL),
        (ws / "d" / ".search", lambda p: os.mkdir(p), errnos.EINVAL),
    ]:
        with pytest.raises(OSError) as info:
            call(path)
        assert info.value.errno == wanted, (path, info.value)
    conn = sqlite3.connect(paths.workspace_file("evil"))
    assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] > 0  # never ran
    conn.close()
    stop = subprocess.run(["fusermount3", "-u", str(mount.path)], capture_output=True)
    assert stop.returncode == 0
    mount.process.wait(timeout=15)


def test_the_stored_reference_schema_is_what_the_migrations_make() -> None:
    """kyfs/engine/sqlite/reference.py (what every open compares a file with) is the
    current migrations' own schema; after a new migration, `make docs` rewrites it."""
    from kyfs.engine.sqlite import reference, schema, trust

    assert reference.VERSION == schema.SCHEMA_VERSION
    assert trust.derive_reference(schema.SCHEMA_VERSION) == reference.OBJECTS
    assert trust.reference(schema.SCHEMA_VERSION) is reference.OBJECTS


def test_db_files_are_untrusted_input(tmp_path: Path, kyfs_home: Path) -> None:
    """``kyfs --db FILE`` (issue 25): an empty file, a file that is not SQLite or holds
    no kyfs schema is refused in one line (exit 4) and never made a workspace; a file
    whose rows break kyfs's rules (a size past the value limit, a key that climbs out)
    is refused (exit 2) in time, never streamed or listed; ``kyfs --db X fsck`` checks
    X and nothing else; nothing is written outside the data directory and X."""
    assert kyfs("create", "alpha").returncode == 0
    assert kyfs("set", "-w", "alpha", "k", "v").returncode == 0
    alpha = stored_values("alpha")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.commit()
    for path in (empty, plain, tmp_path / "notes.txt"):
        if not path.exists():
            path.write_text("not a workspace\n")
        before = path.read_bytes()
        for args in (("keys",), ("set", "k", "v"), ("fsck",), ("fsck", "--repair")):
            done = kyfs("--db", str(path), *args)
            assert done.returncode == 4, (path.name, args, done.stderr)
            assert b"Traceback" not in done.stderr and b"not a kyfs workspace" in (
                done.stdout + done.stderr
            ), (path.name, args, done.stdout + done.stderr)
        assert path.read_bytes() == before, path.name
    good = tmp_path / "good.db"
    good.write_bytes((kyfs_home / "workspaces" / "alpha.db").read_bytes())
    done = kyfs("--db", str(good), "fsck")
    assert done.returncode == 0 and str(good).encode() in done.stdout, done.stdout
    assert b"alpha" not in done.stdout  # the data directory is not checked
    for statement in (
        "UPDATE nodes SET size = 4611686018427387904 WHERE id = (SELECT node FROM entries"
        " WHERE key = 'k')",
        "UPDATE entries SET key = '../../x', parent = '../..' WHERE key = 'k'",
    ):
        hostile = tmp_path / "hostile.db"
        hostile.write_bytes(good.read_bytes())
        conn = sqlite3.connect(hostile)
        conn.execute(statement)
        conn.commit()
        conn.close()
        for args in (("get", "k"), ("keys",)):
            done = kyfs("--db", str(hostile), *args, timeout=5)
            assert done.returncode == 2, (statement, args, done.stderr)
            assert b"not a sound kyfs workspace" in done.stderr and b"../../x" not in done.stdout
    assert stored_values("alpha") == alpha
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "kyfs-home") == [
        "empty.db", "good.db", "hostile.db", "notes.txt", "plain.db"
    ]  # fmt: skip


HOSTILE_ROWS = {  # the tampered files of the tests above, as one corpus
    "escaping key": "INSERT INTO entries (key, parent, node) SELECT '../../x', '../..', node"
    " FROM entries WHERE key = 'k'",
    "absolute key": "INSERT INTO entries (key, parent, node) SELECT '/abs/path', '/abs', node"
    " FROM entries WHERE key = 'k'",
    "recursive view": "ALTER TABLE entries RENAME TO entries_real; CREATE VIEW entries AS"
    " WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT printf('k%d', n)"
    " AS key, '' AS parent, 1 AS node FROM r ORDER BY random()",
    "extra trigger": "CREATE TRIGGER wipe AFTER INSERT ON history BEGIN DELETE FROM entries; END",
    "newer schema": "PRAGMA user_version = 99",
    "size past the limit": "UPDATE nodes SET size = 4611686018427387904 WHERE id ="
    " (SELECT node FROM entries WHERE key = 'k')",
    "time out of range": "UPDATE nodes SET mtime_ns = -1 WHERE id ="
    " (SELECT node FROM entries WHERE key = 'k')",
    "who made a change, not text": "UPDATE history SET comm = x'00ff', user_name ="
    " printf('%0300d', 0), pid = 'x'",
    "retention past its range": "INSERT INTO meta (name, value) VALUES ('ttl_s', '1e300')",
    "device number past 32 bits": "UPDATE nodes SET kind = 8192, size = 0, rdev = 4294967296"
    " WHERE id = (SELECT node FROM entries WHERE key = 'k')",
    "a FIFO with a size": "UPDATE nodes SET kind = 4096 WHERE id ="
    " (SELECT node FROM entries WHERE key = 'k')",
    "an archived node of no known type": "INSERT INTO archive (id, key, is_dir, mode, size,"
    " created_ns, mtime_ns, ctime_ns, deleted_ns, kind, rdev) VALUES (999, 'x', 0, 420, 0,"
    " 1, 1, 1, unixepoch() * 1000000000, 57344, 0)",  # deleted now: no retention purges it
    "a loop of directories": "UPDATE entries SET parent = 'k' WHERE key = 'k'",
    "an attribute value past 64 KiB": "INSERT INTO xattrs (node, name, value) SELECT node,"
    " CAST('user.big' AS BLOB), zeroblob(65537) FROM entries WHERE key = 'k'",
    "an attribute name past 255 bytes": "INSERT INTO xattrs (node, name, value) SELECT node,"
    " CAST('user.' || printf('%0300d', 0) AS BLOB), x'' FROM entries WHERE key = 'k'",
    "a kyfs attribute stored": "INSERT INTO xattrs (node, name, value) SELECT node,"
    " CAST('user.kyfs.ttl' AS BLOB), x'31' FROM entries WHERE key = 'k'",
    "attributes of no node": "INSERT INTO xattrs (node, name, value)"
    " VALUES (987654, CAST('user.x' AS BLOB), x'')",
}


TOLERATED = {"retention past its range"}  # read as the default setting: not damage


@pytest.mark.parametrize("case", sorted(HOSTILE_ROWS))
def test_the_hostile_corpus_through_db(case: str, tmp_path: Path, kyfs_home: Path) -> None:
    """Issue 25: each hostile file of the corpus opened with ``--db``: no command hangs
    past 5 s, none prints a traceback, each refusal is one line with exit 2 or 4 and
    leaves the file as it was; fsck reports what the other commands refuse, and after
    ``fsck --repair`` the file passes fsck and is served (a version number past this
    kyfs's over tables exactly this kyfs's is a damaged number, and is mended); nothing
    is written outside the data directory but the file and the
    damaged copy a salvage keeps beside it."""
    assert kyfs("create", "alpha").returncode == 0
    assert kyfs("set", "-w", "alpha", "k", "v").returncode == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = outside / "hostile.db"
    hostile.write_bytes((kyfs_home / "workspaces" / "alpha.db").read_bytes())
    conn = sqlite3.connect(hostile, isolation_level=None)
    conn.executescript(HOSTILE_ROWS[case])
    conn.close()
    alpha = stored_values("alpha")
    for args in (("keys",), ("get", "k"), ("set", "k", "w")):
        before = tree(outside)
        done = kyfs("--db", str(hostile), *args, timeout=5)
        assert b"Traceback" not in done.stderr, (args, done.stderr)
        if done.returncode:
            assert done.returncode in (2, 4), (args, done.returncode, done.stderr)
            assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
            assert tree(outside) == before, args  # a refusal leaves the file alone
        else:
            assert b"../" not in done.stdout and b"/abs" not in done.stdout
    before = tree(outside)
    checked = kyfs("--db", str(hostile), "fsck", timeout=5)
    assert b"Traceback" not in checked.stderr + checked.stdout
    assert tree(outside) == before  # checking writes nothing
    if case in TOLERATED:
        assert checked.returncode == 0, checked.stdout
    else:
        assert checked.returncode == 4, (checked.stdout, checked.stderr)
    repaired = kyfs("--db", str(hostile), "fsck", "--repair", timeout=5)
    assert b"Traceback" not in repaired.stderr + repaired.stdout
    assert repaired.returncode == 0, (repaired.stdout, repaired.stderr)
    again = kyfs("--db", str(hostile), "fsck", timeout=5)
    assert again.returncode == 0, (again.stdout, again.stderr)
    served = kyfs("--db", str(hostile), "keys", timeout=5)
    assert served.returncode == 0 and b"../" not in served.stdout, served.stderr
    assert stored_values("alpha") == alpha
    assert sorted(p.name for p in outside.iterdir() if "damaged" not in p.name) == ["hostile.db"]
