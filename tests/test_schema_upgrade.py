"""A workspace file written by kyfs 0.1.0 (schema version 5, before nodes) opens with this
kyfs and reads back byte-exact: values, modes, times, directories, archive, history."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

from kyfs.engine.sqlite import schema
from kyfs.engine.sqlite.workspace import SqliteWorkspace

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_version_5_workspace_reads_back_byte_exact(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copyfile(FIXTURES / "v5-workspace.db", path)
    expected = json.loads((FIXTURES / "v5-workspace.json").read_text())
    import sqlite3

    conn = sqlite3.connect(path)
    assert schema.version(conn) == 5  # the fixture really is the old layout
    conn.close()
    ws = SqliteWorkspace(path)
    try:
        assert schema.version(ws._conn) == schema.SCHEMA_VERSION
        assert ws.check() == []
        assert ws.keys() == sorted(expected["keys"])
        for key, facts in expected["keys"].items():
            value = ws.get(key)
            assert hashlib.sha256(value).hexdigest() == facts["sha256"], key
            entry = ws.stat(key)
            assert (entry.size, entry.mode, entry.mtime_ns, entry.created_ns) == (
                facts["size"], facts["mode"], facts["mtime_ns"], facts["created_ns"],
            ), key  # fmt: skip
            assert entry.kind == stat.S_IFREG and entry.nlink == 1
            assert (entry.uid, entry.gid) == (os.getuid(), os.getgid())
            assert entry.stored == (0 if key == "sparse" else entry.size), key  # m012: its blocks
        for directory in expected["directories"]:
            assert ws.stat(directory).is_dir
        assert ws.stat("config").nlink == 3  # 2 + its subdirectory app
        assert ws.stat("").nlink == 2 + 5  # api, bin, config, empty, utf8
        assert [a.entry.key for a in ws.archived()] == expected["archived"]
        assert ws.restore("gone").key == "gone" and ws.get("gone") == b"deleted value"
        sets = [h for h in ws.history("user.name") if h.action == "set"]
        assert len(sets) == expected["history"]["user.name"]
        mode = expected["keys"]["user.name"]["mode"]  # m010: versions take the key's mode
        assert {h.mode for h in sets if h.size is not None} == {mode}
        assert ws.expiry("session") is not None
        # ids (st_ino) of existing nodes are the old entry ids; new nodes never reuse one
        old_ids = {ws.stat(k).id for k in expected["keys"]}
        new = ws.set("new-key", b"x")
        assert new.id > max(old_ids)
        # and it goes on working: a hard link, a rename, search
        ws.link("api/token", "api/token2")
        assert ws.stat("api/token").nlink == 2
        assert [m.key for m in ws.search('"s3cr3t"', 10)] == ["api/token", "api/token2"]
    finally:
        ws.close()


def test_a_backup_made_by_0_1_0_verifies_and_restores(tmp_path: Path, kyfs_home: Path) -> None:
    import subprocess
    import sys
    import tarfile

    expected = json.loads((FIXTURES / "v5-workspace.json").read_text())
    work = tmp_path / "archive"
    (work / "workspaces").mkdir(parents=True)
    db = work / "workspaces" / "old.db"
    shutil.copyfile(FIXTURES / "v5-workspace.db", db)
    manifest = {
        "format": "kyfs-backup", "version": 1, "created": "2026-01-01T00:00:00Z",
        "files": [{"path": "workspaces/old.db", "workspace": "old",
                   "sha256": hashlib.sha256(db.read_bytes()).hexdigest(),
                   "size": db.stat().st_size, "keys": len(expected["keys"])}],
    }  # fmt: skip
    (work / "manifest.json").write_text(json.dumps(manifest))
    archive = tmp_path / "old.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(work / "manifest.json", arcname="manifest.json")
        tar.add(db, arcname="workspaces/old.db")

    def kyfs(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "kyfs", *args], capture_output=True)

    assert kyfs("backup", "verify", str(archive)).returncode == 0
    done = kyfs("backup", "restore", str(archive))
    assert done.returncode == 0, done.stderr
    for key, facts in expected["keys"].items():
        value = kyfs("get", "-w", "old", key).stdout
        assert hashlib.sha256(value).hexdigest() == facts["sha256"], key


def test_a_version_7_workspace_moves_into_the_block_store(tmp_path: Path) -> None:
    """Schema 7 (fixed 256 KiB blocks, history rows holding whole values; written by the
    kyfs before the block store: tests/fixtures/make_v7_workspace.py) upgrades in
    place: every value, version and archived value reads back byte-exact, equal values
    share their blocks, and the file checks clean."""
    import sqlite3

    path = tmp_path / "v7.db"
    shutil.copyfile(FIXTURES / "v7-workspace.db", path)
    expected = json.loads((FIXTURES / "v7-workspace.json").read_text())
    conn = sqlite3.connect(path)
    assert schema.version(conn) == 7
    assert conn.execute("SELECT count(*) FROM history WHERE value IS NOT NULL").fetchone()[0]
    conn.close()
    ws = SqliteWorkspace(path)
    try:
        assert schema.version(ws._conn) == schema.SCHEMA_VERSION
        assert ws.check() == []
        for key, facts in expected["keys"].items():
            value = ws.get(key)
            assert (hashlib.sha256(value).hexdigest(), len(value)) == (
                facts["sha256"], facts["size"],
            ), key  # fmt: skip
        for key, versions in expected["versions"].items():
            kept = {h.id: h for h in ws.history(key) if h.size is not None}
            for version_id, digest in versions:
                assert hashlib.sha256(ws.version_value(version_id)).hexdigest() == digest, key
                assert kept[version_id].size is not None
        assert {a.entry.key: a.entry.size for a in ws.archived()} == expected["archived"]
        assert ws.restore("gone").key == "gone"
        ws.set_xattr("gone", "user.m013", b"xattrs")  # m013: extended attributes
        assert ws.get_xattr("gone", "user.m013") == b"xattrs"
        # copies/a and copies/b (and their versions) hold the same bytes: stored once
        sql = "SELECT block FROM extents WHERE owner = ? ORDER BY pos"
        a, b = (
            ws._conn.execute(sql, (ws.stat(k).id,)).fetchall() for k in ("copies/a", "copies/b")
        )
        assert a == b and len(a) > 1
        assert ws.read(ws.stat("sparse").id, 0, 10) == bytes(10)  # the hole stayed a hole
    finally:
        ws.close()
