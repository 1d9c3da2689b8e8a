"""Data in and out: KyCLI migration (all three formats), scoped and ProntoDB files,
backup/verify/restore, export/import."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kyfs.cli import cli
from kyfs.engine.sqlite.engine import SqliteEngine
from kyfs.platform import paths
from tests.conftest import stored_values as values

NOW = "2099-01-01 00:00:00.000000"  # far future: not expired
PAST = "2001-02-03 04:05:06.789000"


def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- KyCLI file builders (the formats of balakrishna-maduru/kycli) -------------------------
def kycli_plain(path: Path, with_expiry: bool = True) -> None:
    conn = sqlite3.connect(path)
    expiry = ", expires_at DATETIME" if with_expiry else ""
    conn.executescript(
        f"""
        CREATE TABLE kvstore (key TEXT PRIMARY KEY, value TEXT{expiry});
        CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, value TEXT,
            timestamp DATETIME DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
        CREATE TABLE archive (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, value TEXT,
            deleted_at DATETIME DEFAULT CURRENT_TIMESTAMP);
        CREATE VIRTUAL TABLE fts_kvstore USING fts5(key, value, content='kvstore');
        CREATE TRIGGER trg_kv_ai AFTER INSERT ON kvstore BEGIN
            INSERT INTO fts_kvstore(rowid, key, value) VALUES (new.rowid, new.key, new.value);
        END;
        """
    )
    rows = [("user.name", "Alice", NOW), ("config", '{"a": [1, 2]}', None),
            ("multi line", "line 1\nline 2\n", None), ("gone", "expired value", PAST),
            ("odd/../key", "kept under an encoded name", None)]  # fmt: skip
    for key, value, expires in rows:
        if with_expiry:
            conn.execute("INSERT OR REPLACE INTO kvstore VALUES (?, ?, ?)", (key, value, expires))
        else:
            conn.execute("INSERT OR REPLACE INTO kvstore VALUES (?, ?)", (key, value))
    # INSERT OR REPLACE: KyCLI's way, which leaves the FTS index stale
    if with_expiry:
        conn.execute("INSERT OR REPLACE INTO kvstore VALUES ('user.name', 'Alice B.', NULL)")
    else:
        conn.execute("INSERT OR REPLACE INTO kvstore VALUES ('user.name', 'Alice B.')")
    conn.executemany(
        "INSERT INTO audit_log (key, value, timestamp) VALUES (?, ?, ?)",
        [("user.name", "Alice", "2024-01-01 10:00:00.000000"),
         ("user.name", "Alice B.", "2024-01-02 10:00:00"),
         ("old", "was here", "2024-01-03 10:00:00.5"),
         ("old", None, "2024-01-04 10:00:00.000000")],
    )  # fmt: skip
    conn.execute(
        "INSERT INTO archive (key, value, deleted_at) VALUES ('old', 'was here', ?)", (PAST,)
    )
    conn.commit()
    conn.close()


DUMP = """BEGIN TRANSACTION;
INSERT OR REPLACE INTO kvstore (key, value, expires_at) VALUES ('token', '{token}', NULL);
INSERT OR REPLACE INTO kvstore (key, value, expires_at) VALUES ('packed', '{packed}', NULL);
INSERT OR REPLACE INTO kvstore (key, value, expires_at) VALUES ('it''s', 'quoted', NULL);
INSERT INTO audit_log (key, value, timestamp) VALUES ('token', '{token}', '2024-05-01 00:00:00.0');
INSERT INTO archive (key, value, deleted_at) VALUES ('dropped', 'old', '2024-05-02 00:00:00');
COMMIT;"""


def _aes(master_key: str):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    kdf = PBKDF2HMAC(hashes.SHA256(), 32, b"kycli_vault_salt", 100_000)
    return AESGCM(kdf.derive(master_key.encode()))


def kycli_dump(path: Path, master_key: str | None = None) -> None:
    packed = "cmp:zlib:" + base64.b64encode(zlib.compress(b"compressed text value")).decode()
    token = "jwt-secret"
    if master_key:
        nonce = os.urandom(12)
        cipher = _aes(master_key).encrypt(nonce, b"jwt-secret", None)
        token = "enc:" + base64.b64encode(nonce + cipher).decode()
    payload = zlib.compress(DUMP.format(token=token, packed=packed).encode())
    if master_key:
        nonce = os.urandom(12)
        payload = nonce + _aes(master_key).encrypt(nonce, payload, None)
    path.write_bytes(b"KYCLI\x01" + payload)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    return user_home


def test_kycli_plain_import_is_lossless_and_leaves_the_source(home: Path) -> None:
    source = home / "kydata.db"
    kycli_plain(source)
    before = sha(source)
    result = run("migrate", "kycli", "--yes", "--quiet")
    assert result.exit_code == 0, result.output
    assert sha(source) == before  # never modified
    got = values("default")
    assert got["user.name"] == b"Alice B."
    assert got["config"] == b'{"a": [1, 2]}'
    assert got["multi line"] == b"line 1\nline 2\n"
    assert "gone" not in got  # expired: not live
    assert got["odd%2F..%2Fkey"] == b"kept under an encoded name"
    assert "odd/../key" in result.output  # the renamed key is reported
    archived = json.loads(run("archive", "--json", "-w", "default").output)
    assert {a["key"] for a in archived} == {"gone", "old"}
    assert run("restore", "-w", "default", "gone").exit_code == 0
    assert values("default")["gone"] == b"expired value"
    hist = json.loads(run("history", "-w", "default", "user.name", "--json").output)
    assert [h["action"] for h in hist] == ["set", "set", "set"]  # KyCLI's two, then the import
    assert hist[0]["time"].startswith("2024-01-01T10:00:00") and hist[2]["detail"] == "imported"
    old = json.loads(run("history", "-w", "default", "old", "--json").output)
    assert [h["action"] for h in old] == ["set", "delete"]
    # search works on the imported data: our index, not KyCLI's stale one
    assert run("search", "-w", "default", "Alice", "--keys-only").output == "default/user.name\n"


def test_kycli_old_file_without_expiry_and_per_workspace_files(home: Path) -> None:
    data = home / ".kycli" / "data"
    data.mkdir(parents=True)
    kycli_plain(data / "proj.db", with_expiry=False)
    kycli_dump(data / "dumped.db")
    assert run("migrate", "kycli", "--yes", "--quiet").exit_code == 0
    assert values("proj")["gone"] == b"expired value"  # no expiry column: all live
    dumped = values("dumped")
    assert dumped == {"token": b"jwt-secret", "packed": b"compressed text value", "it's": b"quoted"}
    assert run("migrate", "kycli", "--yes").exit_code == 3  # workspaces exist now


def test_kycli_encrypted_needs_the_master_key(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "vault.db"
    kycli_dump(source, master_key="s3cret")
    no_key = run("migrate", "kycli", str(source), "--yes")
    assert no_key.exit_code == 2
    assert "encrypted" in no_key.output and "Traceback" not in no_key.output
    wrong = run("migrate", "kycli", str(source), "--yes", "--master-key-env", "KEY",
                env={"KEY": "wrong"})  # fmt: skip
    assert wrong.exit_code == 2 and "wrong master key" in wrong.output
    ok = run("migrate", "kycli", str(source), "--yes", "--master-key-env", "KEY",
             env={"KEY": "s3cret"})  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert values("vault")["token"] == b"jwt-secret"


def test_a_crafted_dump_cannot_touch_files(home: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.db"
    sql = f"ATTACH DATABASE '{victim}' AS evil; CREATE TABLE evil.t (x);"
    (tmp_path / "evil.db").write_bytes(b"KYCLI\x01" + zlib.compress(sql.encode()))
    result = run("migrate", "kycli", str(tmp_path / "evil.db"), "--yes")
    assert result.exit_code == 2
    assert not victim.exists()


def test_first_run_hint_is_shown_once(home: Path) -> None:
    kycli_plain(home / "kydata.db")
    first = run("workspaces")
    assert "kyfs migrate kycli" in first.stderr
    assert "kyfs migrate kycli" not in run("workspaces").stderr


# --- scoped and ProntoDB files ----------------------------------------------------------------
def scoped_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE kvstore (scope TEXT, key TEXT, value TEXT, expires_at DATETIME,"
        " PRIMARY KEY (scope, key))"
    )
    rows = [("alpha", "k1", "v1", None), ("alpha", "k2", "v2", None),
            ("beta team", "k1", "b1", None), ("alpha", "old", "x", PAST)]  # fmt: skip
    conn.executemany("INSERT INTO kvstore VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


def prontodb_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE kv (project TEXT, namespace TEXT, key TEXT, context TEXT, value TEXT,"
        " created_at INTEGER, updated_at INTEGER, expires_at INTEGER)"
    )
    rows = [("web", "db", "host", None, "localhost", 1700000000, 1700000100, None),
            ("web", "db", "host", "prod", "db.internal", 1700000000, 1700000200, None),
            ("web", "", "flag", None, "on", 1700000000, 1700000000, None),
            ("api", "cache", "ttl", None, "60", 1700000000, 1700000000, 1000)]  # fmt: skip
    conn.executemany("INSERT INTO kv VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


def test_scoped_file_analyze_run_validate_cleanup(tmp_path: Path) -> None:
    source = tmp_path / "scoped.db"
    scoped_file(source)
    analysis = json.loads(run("migrate", "analyze", str(source), "--json").output)
    assert analysis["keys"] == 3
    assert {w["name"]: w["keys"] for w in analysis["workspaces"]} == {"alpha": 2, "beta_team": 1}
    assert any("beta team" in n for n in analysis["invalid_names"])
    report = tmp_path / "report.json"
    assert run("migrate", "analyze", str(source), "--report", str(report)).exit_code == 0
    assert json.loads(report.read_text())["keys"] == 3
    assert run("migrate", "validate", str(source)).exit_code == 4  # nothing migrated yet
    assert run("migrate", "cleanup", str(source), "--confirm").exit_code == 2
    dry = run("migrate", "run", str(source), "--dry-run")
    assert dry.exit_code == 0 and SqliteEngine().names() == []
    done = run("migrate", "run", str(source), "--concurrency", "2", "--quiet")
    assert done.exit_code == 0, done.output
    assert done.output.startswith("migrated 3 keys into 2 workspaces")
    assert values("alpha") == {"k1": b"v1", "k2": b"v2"}
    assert values("beta_team") == {"k1": b"b1"}
    assert json.loads(run("archive", "--json", "-w", "alpha").output)[0]["key"] == "old"
    again = run("migrate", "run", str(source))
    assert again.exit_code == 3  # workspaces exist: refused without --merge
    planned = run("migrate", "run", str(source), "--dry-run")  # ... but the plan shows them
    assert planned.exit_code == 0 and "yes" in planned.output and "conflicts" in planned.output
    assert run("migrate", "run", str(source), "--merge", "keep").exit_code == 0
    check = run("migrate", "validate", str(source))
    assert check.exit_code == 0 and "3 keys migrated, checksums match" in check.output
    cleaned = run("migrate", "cleanup", str(source), "--confirm")
    assert cleaned.exit_code == 0, cleaned.output
    assert not source.exists()
    assert len(list((paths.trash_dir() / "sources").iterdir())) == 1


def test_a_scoped_file_brings_its_archive_and_audit_log(tmp_path: Path) -> None:
    source = tmp_path / "scoped.db"
    scoped_file(source)
    conn = sqlite3.connect(source)
    conn.execute("CREATE TABLE archive (id INTEGER PRIMARY KEY, scope TEXT, key TEXT,"
                 " value TEXT, deleted_at DATETIME)")  # fmt: skip
    conn.execute("CREATE TABLE audit_log (id INTEGER PRIMARY KEY, scope TEXT, key TEXT,"
                 " value TEXT, timestamp DATETIME)")  # fmt: skip
    conn.execute("INSERT INTO archive VALUES (1, 'beta team', 'gone', 'was here',"
                 " '2024-01-02 03:04:05')")  # fmt: skip
    conn.executemany("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?)", [
        (1, "alpha", "k1", "v0", "2024-01-01 00:00:00"),
        (2, "alpha", "k1", "v1", "2024-01-02 00:00:00"),
        (3, "beta team", "gone", None, "2024-01-02 03:04:05"),
    ])  # fmt: skip
    conn.commit()
    conn.close()
    assert run("migrate", "run", str(source), "--quiet").exit_code == 0
    archived = json.loads(run("archive", "--json", "-w", "beta_team").output)
    assert [a["key"] for a in archived] == ["gone"]
    assert run("restore", "-w", "beta_team", "gone").exit_code == 0
    assert values("beta_team")["gone"] == b"was here"
    history = json.loads(run("history", "-w", "alpha", "k1", "--json").output)
    imported = [h for h in history if h["time"].startswith("2024")]
    assert [h.get("value") for h in imported] == ["v0", "v1"]
    gone = json.loads(run("history", "-w", "beta_team", "gone", "--json").output)
    assert any(h["action"] == "delete" and h["time"].startswith("2024-01-02") for h in gone)
    logged = [json.loads(line) for line in run("log", "--all", "--json").output.splitlines()]
    old = [(c["workspace"], c["key"], c["action"], c["source"]) for c in logged[:3]]
    assert old == [  # the audit log carries over into the timeline, oldest first
        ("alpha", "k1", "set", "kycli"),
        ("alpha", "k1", "set", "kycli"),
        ("beta_team", "gone", "delete", "kycli"),
    ]


def test_validate_notices_a_changed_value(tmp_path: Path) -> None:
    source = tmp_path / "scoped.db"
    scoped_file(source)
    run("migrate", "run", str(source), "--quiet")
    run("set", "-w", "alpha", "k1", "tampered")
    result = run("migrate", "validate", str(source))
    assert result.exit_code == 4 and "different: alpha/k1" in result.output


def test_prontodb_mapping(tmp_path: Path) -> None:
    source = tmp_path / "pronto.db"
    prontodb_file(source)
    assert run("migrate", "run", str(source), "--quiet").exit_code == 0
    assert values("web") == {
        "db.host": b"localhost",
        "db.host__prod": b"db.internal",  # ProntoDB's key__context (tests/test_addresses.py)
        "flag": b"on",
    }
    assert values("api") == {}  # expired in 1970: archived
    got = json.loads(run("get", "-w", "web", "db.host", "--json").output)
    assert got["created"].startswith("2023-11-14T22:13:20") and got["updated"].startswith(
        "2023-11-14T22:15:00"
    )
    assert "3 keys migrated" in run("migrate", "validate", str(source)).output


# --- backup ----------------------------------------------------------------------------------
@pytest.fixture
def busy_workspace() -> Iterator[threading.Event]:
    assert run("use", "live", "--create").exit_code == 0
    for i in range(50):
        run("set", f"seed/{i}", f"value {i}")
    run("set", "bin", input=bytes(range(256)))
    stop = threading.Event()

    def writer() -> None:
        w = SqliteEngine()
        s = w.open("live")
        i = 0
        while not stop.is_set():
            s.set(f"stream/{i:06d}", f"streamed {i}".encode())
            i += 1
        s.close()
        w.close()

    thread = threading.Thread(target=writer)
    thread.start()
    yield stop
    stop.set()
    thread.join()


def test_backup_while_writing_then_restore_as_new(
    busy_workspace: threading.Event, tmp_path: Path
) -> None:
    archive = tmp_path / "b.tar.gz"
    created = run("backup", "create", "-o", str(archive), "--quiet")
    assert created.exit_code == 0, created.output
    busy_workspace.set()
    assert run("backup", "verify", str(archive)).exit_code == 0
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert names[0] == "manifest.json" and "workspaces/live.db" in names
    [entry] = [f for f in manifest["files"] if f.get("workspace") == "live"]
    restored = run("backup", "restore", str(archive), "-w", "live", "--as", "copy")
    assert restored.exit_code == 0, restored.output
    copy = values("copy")
    assert len(copy) == entry["keys"]
    assert copy["bin"] == bytes(range(256))
    for key, value in copy.items():  # every key consistent: as written, never torn
        if key.startswith("stream/"):
            assert value == f"streamed {int(key[7:])}".encode()
    assert run("backup", "restore", str(archive), "-w", "live").exit_code == 3
    forced = run("backup", "restore", str(archive), "-w", "live", "--force")
    assert forced.exit_code == 0
    assert any(t["name"] == "live" for t in json.loads(run("trash", "--json").output))


def test_verify_catches_a_changed_archive(tmp_path: Path) -> None:
    run("use", "w", "--create")
    run("set", "k", "v")
    archive = tmp_path / "b.tar.gz"
    run("backup", "create", "-o", str(archive), "--quiet")
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(bad, "w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith(".db"):
                data = data[:-100] + b"\x01" * 100
            member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data))
    result = run("backup", "verify", str(bad))
    assert result.exit_code == 2 and "checksum" in result.output
    restored = run("backup", "restore", str(bad), "--as", "x")
    assert restored.exit_code == 2 and not SqliteEngine().exists("x")


# --- export / import ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "json", "dir"])
def test_export_then_import_is_identical(fmt: str, tmp_path: Path) -> None:
    run("use", "src", "--create")
    run("set", "text", "héllo")
    run("set", "nested/deep/key", "x")
    run("set", "bin", input=bytes(range(256)) * 3)
    run("set", "empty", input=b"")
    target = tmp_path / ("out" if fmt == "dir" else f"out.{fmt}")
    assert run("export", "--format", fmt, "-o", str(target)).exit_code == 0
    assert run("create", "dst").exit_code == 0
    result = run("import", str(target), "-w", "dst")
    assert result.exit_code == 0, result.output
    assert values("dst") == values("src")
    assert run("import", str(target), "-w", "dst").exit_code == 3
    assert run("import", str(target), "-w", "dst", "--merge", "keep").exit_code == 0


def test_export_to_stdout_and_bad_import(tmp_path: Path) -> None:
    run("use", "src", "--create")
    run("set", "a", "1")
    lines = run("export").output.splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    result = run("import", str(bad))
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_full_backup_keeps_users_state_and_cursors(tmp_path: Path, kyfs_home: Path) -> None:
    other = tmp_path / "elsewhere"
    assert run("--user", "alice", "use", "notes", "--create").exit_code == 0
    assert run("--user", "alice", "cursor", "set", "work", str(other)).exit_code == 0
    assert run("--user", "bob", "use", "shared").exit_code == 0
    archive = tmp_path / "full.tar.gz"
    assert run("backup", "create", "-o", str(archive), "--quiet").exit_code == 0
    listed = json.loads(run("backup", "verify", str(archive), "--json").output)
    # a full backup holds every identity's workspaces, under their stored names
    assert listed["ok"] and listed["workspaces"]["alice~notes"] == 0
    partial = tmp_path / "notes.tar.gz"  # a backup of some workspaces keeps no user's state
    made = run("backup", "create", "-o", str(partial), "-w", "alice~notes", "--quiet")
    assert made.exit_code == 0, made.output
    with tarfile.open(partial) as tar:
        names = tar.getnames()
    assert not [n for n in names if n.startswith(("users/", "cursors/"))], names
    shutil.rmtree(kyfs_home)  # a new machine
    done = run("backup", "restore", str(archive), "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert {"users/alice.toml", "users/bob.toml", "cursors/alice/work.toml"} <= set(result["state"])
    assert "alice~notes" in result["workspaces"]
    status = json.loads(run("--user", "alice", "cursor", "list", "--json").output)
    assert status[0]["name"] == "work" and status[0]["path"] == str(other)
    for user, expected in (("alice", "notes"), ("bob", "shared")):
        listed = json.loads(run("--user", user, "workspaces", "--json").output)
        assert [w["name"] for w in listed if w["active"]] == [expected]
    # A hostile state file (not TOML) is refused, nothing written.
    bad = tmp_path / "bad.tar.gz"
    _rewrite_member(archive, bad, "users/alice.toml", b"\x00not toml [")
    shutil.rmtree(kyfs_home)
    refused = run("backup", "restore", str(bad))
    assert refused.exit_code == 2 and "not TOML" in refused.output
    assert not (kyfs_home / "users" / "alice.toml").exists()


def _rewrite_member(source: Path, target: Path, name: str, data: bytes) -> None:
    """Copy backup ``source`` to ``target`` with member ``name`` replaced by ``data`` and
    the manifest's checksum and size made to match (a consistent but hostile backup)."""
    import io
    import tarfile

    with tarfile.open(source, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    manifest = json.loads(members[0][1])
    for item in manifest["files"]:
        if item["path"] == name:
            item["sha256"], item["size"] = hashlib.sha256(data).hexdigest(), len(data)
    with tarfile.open(target, "w:gz") as tar:
        for member, content in members:
            if member.name == "manifest.json":
                content = json.dumps(manifest).encode()
            elif member.name == name:
                content = data
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
