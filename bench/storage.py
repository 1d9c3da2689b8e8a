"""Workloads 18 to 23, the storage section (issue 24): what kyfs keeps on disk and in
memory under real work, against the budgets of the issue, on the SQLite engine and
(where it says so) the PostgreSQL engine.

18. appends: 1,000 appends of 100 bytes to a 100 KB file through the mount, each by its
    own process (``/bin/echo LINE >> log`` in a bash loop): the workspace's files (db +
    wal + shm, or the schema's tables on PostgreSQL), the versions of the last hour,
    and 5 of them restored byte-exact;
19. a SQLite database in WAL mode kept in a workspace, 10,000 single-row inserts (each
    its own transaction): kyfs's files against the database's own (db + wal + shm);
20. ``git clone`` of a real repository (this project's own, ``--no-local``): the
    workspace's files against the clone's ``du -s`` on the native disk;
21. ``rm -rf`` of a ~100 MB tree, then the same tree written again (what ``rm -rf
    node_modules; npm install`` does) and then a different ~100 MB: growth of the files
    before any compact; then ``kyfs trash empty``, archive expiry and ``kyfs compact``:
    the files against live + kept undo bytes (``kyfs du``);
22. memory: 400 files open at once, each with 4 MiB of unsaved writes: the daemon's
    peak RSS, and its RSS after they are closed;
23. speed of the block store itself: a 64 MiB file written and read through the mount
    (MiB/s) next to the loopback's, so the cost of cutting, hashing and compressing
    shows.

Nothing here asserts anything; tests/ does. Each returns {name: value}.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import kyfs_mount, loopback, sh
from bench.real_trees import REPOSITORY as REPOSITORY_URL

REST = 3.5  # seconds: the daemon gives space back after 2 s without a request (at rest)
APPEND_BASE = 100_000  # bytes of the log before the appends
APPENDS = 1000
INSERTS = 10_000
OPEN_FILES = 400
UNSAVED = 4 * 1024 * 1024  # bytes written to each open file


def files_bytes(home: Path) -> int:
    """Bytes of every workspace file of a data directory (db, -wal, -shm), trash aside."""
    return sum(p.stat().st_size for p in (home / "workspaces").iterdir() if p.is_file())


def kyfs_cli(env: dict[str, str], *args: str) -> str:
    """Run a kyfs command with the daemon's environment; its stdout."""
    done = subprocess.run([sys.executable, "-m", "kyfs", *args], env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout


def du_bytes(env: dict[str, str]) -> dict[str, Any]:
    """``kyfs du --all --json`` of the daemon's data."""
    return dict(json.loads(kyfs_cli(env, "du", "--all", "--json")))


def at_rest(env: dict[str, str], engine: str | None) -> dict[str, int]:
    """The workspace's bytes at rest (``kyfs du``: on SQLite the daemon has given free
    pages and the WAL back by then); on PostgreSQL also after ``kyfs compact`` (VACUUM
    FULL: row versions that autovacuum would only make reusable)."""
    out = {"files_bytes": du_bytes(env)["workspaces"]["default"]["file"]}
    if engine is not None:
        kyfs_cli(env, "compact", "-w", "default")
        out["files_bytes_compacted"] = du_bytes(env)["workspaces"]["default"]["file"]
    return out


def appends(scratch: Path, engine: str | None = None, tag: str = "sqlite") -> dict[str, Any]:
    """Workload 18."""
    out: dict[str, Any] = {}
    with kyfs_mount(scratch, engine=engine, name=f"appends-{tag}") as target:
        log = target.root / "log"
        base = b"".join(
            f"2026-12-04T10:00:{n % 60:02d}Z worker-{n % 7} id={n:08d} status=200\n".encode()
            for n in range(APPEND_BASE // 50 + 1)
        )[:APPEND_BASE]
        log.write_bytes(base)
        time.sleep(2.5)  # the next process's appends do not coalesce with this write
        rng = random.Random(18)  # log lines with a random request id: half compressible
        lines = [f"{n:05d}-{rng.randbytes(46).hex()}x" for n in range(APPENDS)]  # 100 B with \n
        started = time.perf_counter()
        # bash opens a redirection in the forked child (dash opens it in the shell itself,
        # so a dash loop's appends come from one process and coalesce into one version)
        script = "for line in " + " ".join(lines) + '; do /bin/echo "$line" >> log; done'
        subprocess.run(["bash", "-c", script], cwd=target.root, check=True)
        out["appends_s"] = time.perf_counter() - started
        time.sleep(REST)  # let the checkpointer fold the WAL in
        history = json.loads(kyfs_cli(target.env, "history", "-w", "default", "log", "--json"))
        versions = [h for h in history if h["size"] is not None]
        out["versions_listed"] = len(versions)
        restored = 0
        for pick in (1, 250, 500, 750, len(versions) - 1):
            version = versions[min(pick, len(versions) - 1)]
            expect = base + b"".join(f"{line}\n".encode() for line in lines)
            expect = expect[: version["size"]]
            kyfs_cli(target.env, "restore", "-w", "default", "log", "--version",
                     str(version["version"]))  # fmt: skip
            get = [sys.executable, "-m", "kyfs", "get", "-w", "default", "log"]
            got = subprocess.run(get, env=target.env, capture_output=True, check=True).stdout
            restored += got == expect
        out["restored_exact"] = restored
        usage = du_bytes(target.env)["workspaces"]["default"]
        out["live_bytes"], out["history_bytes"] = usage["live"], usage["history"]
        out.update(at_rest(target.env, engine))
    if engine is None:
        out["files_bytes_after_unmount"] = files_bytes(scratch / f"appends-{tag}-home")
    return out


INSERTER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, note TEXT)")
for n in range(int(sys.argv[2])):
    conn.execute("INSERT INTO t (name, note) VALUES (?, ?)", (f"user {n}", f"note number {n} " * 3))
    conn.commit()
conn.close()
"""


def sqlite_inside(scratch: Path, engine: str | None = None, tag: str = "sqlite") -> dict[str, Any]:
    """Workload 19. The database's own size: the same inserts into a native directory."""
    out: dict[str, Any] = {}
    native = scratch / f"sqlite-native-{tag}"
    native.mkdir()
    subprocess.run([sys.executable, "-c", INSERTER, str(native / "app.db"), str(INSERTS)],
                   check=True)  # fmt: skip
    out["own_bytes"] = sum(p.stat().st_size for p in native.iterdir())
    with kyfs_mount(scratch, engine=engine, name=f"sqlite-{tag}") as target:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", INSERTER, str(target.root / "app.db"),
                        str(INSERTS)], check=True)  # fmt: skip
        out["inserts_s"] = time.perf_counter() - started
        out["inner_bytes"] = sum(p.stat().st_size for p in target.root.iterdir())
        time.sleep(REST)
        out["history_bytes"] = du_bytes(target.env)["workspaces"]["default"]["history"]
        out.update(at_rest(target.env, engine))
    if engine is None:
        out["files_bytes_after_unmount"] = files_bytes(scratch / f"sqlite-{tag}-home")
    return out


def git_clone(scratch: Path, engine: str | None = None, tag: str = "sqlite") -> dict[str, Any]:
    """Workload 20."""
    out: dict[str, Any] = {}
    native = scratch / f"clone-native-{tag}"
    sh(f"git clone -q --no-local {REPOSITORY_URL} {native}")
    du = subprocess.run(["du", "-sk", str(native)], capture_output=True, text=True, check=True)
    out["native_du_bytes"] = int(du.stdout.split()[0]) * 1024
    with kyfs_mount(scratch, engine=engine, name=f"clone-{tag}") as target:
        sh(f"git clone -q --no-local {REPOSITORY_URL} {target.root / 'repo'}")
        time.sleep(REST)
        out.update(at_rest(target.env, engine))
    if engine is None:
        out["files_bytes_after_unmount"] = files_bytes(scratch / f"clone-{tag}-home")
    return out


def make_tree(root: Path, megabytes: int, seed: int) -> None:
    """A tree of ~``megabytes`` MB: 40% text-like files, 60% random ones, 4-400 KB each."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"token", b"module", b"export"]
    total, n = 0, 0
    while total < megabytes * 1_000_000:
        size = rng.randrange(4_000, 400_000)
        folder = root / f"pkg{n % 37:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        if n % 5 < 2:
            data = b" ".join(rng.choice(words) for _ in range(size // 6))[:size]
        else:
            data = rng.randbytes(size)
        (folder / f"file{n:05d}.bin").write_bytes(data)
        total += size
        n += 1


def rm_rf(scratch: Path) -> dict[str, Any]:
    """Workload 21 (SQLite: the data directory's files), on three different trees:
    A written, removed and written again (deduplicated against its undo data); B
    written after A's second removal (A kept as undo data: the files grow by B); with
    a small undo cap (``undo_cap_mib = 8``), B removed and, once the daemon's upkeep
    has looked (within UNDO_EVERY), C written into the space B's blocks left; then the
    trash emptied, the archive expired and everything compacted."""
    from kyfs.app import Upkeep

    out: dict[str, Any] = {}
    trees = [scratch / f"tree-{n}" for n in "abc"]
    for seed, tree in enumerate(trees, start=1):
        make_tree(tree, 100, seed=seed)
    home = scratch / "rmrf-home"

    def step(command: str) -> int:
        sh(command)
        time.sleep(REST)
        return files_bytes(home)

    with kyfs_mount(scratch, name="rmrf") as target:
        root = target.root
        out["files_after_write"] = step(f"cp -r {trees[0]} {root}/tree")
        after_rm = step(f"rm -rf {root}/tree")
        out["growth_same_tree"] = step(f"cp -r {trees[0]} {root}/tree") / after_rm - 1
        after_rm = step(f"rm -rf {root}/tree")
        out["growth_other_tree"] = step(f"cp -r {trees[1]} {root}/tree2") / after_rm - 1
        (home / "config.toml").write_text("undo_cap_mib = 8\n")
        after_rm = step(f"rm -rf {root}/tree2")
        time.sleep(Upkeep.UNDO_EVERY + 2 * Upkeep.INTERVAL)  # the upkeep releases B
        out["growth_after_cap"] = step(f"cp -r {trees[2]} {root}/tree3") / after_rm - 1
        kyfs_cli(target.env, "trash", "empty", "--yes")
        (home / "config.toml").write_text("archive_retention_days = 0\n")
        kyfs_cli(target.env, "compact", "--all")  # opening purges the expired archive
        kyfs_cli(target.env, "compact", "--all")
        usage = du_bytes(target.env)["workspaces"]["default"]
        out["files_after_compact"] = files_bytes(home)
        out["live_and_undo"] = sum(usage[part] for part in ("live", "history", "archive",
                                                             "search"))  # fmt: skip
    out["fresh_copy"] = fresh_copy_bytes(home / "workspaces" / "default.db", scratch)
    return out


def fresh_copy_bytes(db: Path, scratch: Path) -> int:
    """Bytes of a copy of workspace file ``db`` written afresh (VACUUM INTO: every row
    packed anew, no free page, no dead FTS segment): what the same data takes at least."""
    import sqlite3

    copy = scratch / "fresh-copy.db"
    conn = sqlite3.connect(db)
    try:
        conn.execute("VACUUM INTO ?", (str(copy),))
    finally:
        conn.close()
    size = copy.stat().st_size
    copy.unlink()
    return size


OPENER = r"""
import os, sys, time
root, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = os.urandom(1 << 20)
files = [open(os.path.join(root, f"open{n:03d}"), "wb") for n in range(count)]
for f in files:
    for _ in range(size // len(chunk)):
        f.write(chunk)
    f.flush()
print("written", flush=True)
sys.stdin.readline()
for f in files:
    f.close()
print("closed", flush=True)
"""


def rss_kib(pid: int, field: str) -> int:
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def open_files(scratch: Path) -> dict[str, Any]:
    """Workload 22."""
    out: dict[str, Any] = {}
    with kyfs_mount(scratch, name="openfiles") as target:
        assert target.process is not None
        pid = target.process.pid
        target.reset_peak_rss()
        opener = subprocess.Popen(
            [sys.executable, "-c", OPENER, str(target.root), str(OPEN_FILES), str(UNSAVED)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert opener.stdin is not None and opener.stdout is not None
        opener.stdout.readline()
        out["rss_open_mib"] = rss_kib(pid, "VmRSS") / 1024
        opener.stdin.write("\n")
        opener.stdin.flush()
        opener.stdout.readline()
        opener.wait()
        time.sleep(2)
        out["peak_rss_mib"] = rss_kib(pid, "VmHWM") / 1024
        out["rss_after_close_mib"] = rss_kib(pid, "VmRSS") / 1024
    return out


def throughput(scratch: Path) -> dict[str, Any]:
    """Workload 23: 64 MiB of half text, half random bytes, written then read cold."""
    from bench.harness import drop_caches

    source = scratch / "mixed.bin"
    with source.open("wb") as handle:
        for n in range(32):
            handle.write(os.urandom(1 << 20) if n % 2 else (b"text line %d\n" % n) * 80_000)
    size = source.stat().st_size
    out: dict[str, Any] = {}
    for name, make in (("loopback", loopback), ("kyfs", kyfs_mount)):
        with make(scratch) as target:
            dest = target.root / "mixed.bin"
            started = time.perf_counter()
            sh(f"dd if={source} of={dest} bs=1M status=none conv=fsync")
            out[f"write_mib_s.{name}"] = size / 2**20 / (time.perf_counter() - started)
            drop_caches()
            started = time.perf_counter()
            sh(f"dd if={dest} of=/dev/null bs=1M status=none")
            out[f"read_mib_s.{name}"] = size / 2**20 / (time.perf_counter() - started)
    return out


def database_of_its_own(url: str, name: str) -> str:
    """The URL of a new, empty database ``name`` on the server of ``url``: each
    PostgreSQL workload measures its own workspace alone."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return make_conninfo(**{**conninfo_to_dict(url), "dbname": name})


def run_all(scratch: Path, pg_url: str | None = None) -> dict[str, Any]:
    """Every storage workload; PostgreSQL's too when ``pg_url`` is given."""
    results: dict[str, Any] = {}
    for name, workload in (("appends", appends), ("sqlite", sqlite_inside),
                           ("clone", git_clone)):  # fmt: skip
        for key, value in workload(scratch).items():
            results[f"storage.{name}.{key}"] = value
        if pg_url is not None:
            url = database_of_its_own(pg_url, f"storage_{name}")
            for key, value in workload(scratch, url, "pg").items():
                results[f"storage.{name}.pg.{key}"] = value
    for name, workload in (("rmrf", rm_rf), ("openfiles", open_files),
                           ("speed", throughput)):  # fmt: skip
        for key, value in workload(scratch).items():
            results[f"storage.{name}.{key}"] = value
    return results


def report(results: dict[str, Any]) -> None:
    """Print the storage section: each figure against its budget."""
    mib = 2**20

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print("storage (issue 24): the budgets of its 'done when'")
    for engine in ("", "pg."):
        label = "postgresql" if engine else "sqlite"
        if f"storage.appends.{engine}files_bytes" not in results:
            continue

        def files(workload: str, engine: str = engine) -> tuple[int, str]:
            """The files at rest (on PostgreSQL after kyfs compact, with the figure
            before it), in bytes, and how to show them."""
            key = f"storage.{workload}.{engine}"
            at_rest = results[f"{key}files_bytes"]
            compacted = results.get(f"{key}files_bytes_compacted")
            if compacted is None:
                return at_rest, f"{at_rest / mib:.1f} MiB"
            return compacted, f"{compacted / mib:.1f} MiB after compact ({at_rest / mib:.1f})"

        size, shown = files("appends")
        key = f"storage.appends.{engine}"
        print(f"18. {label}: 1,000 appends of 100 B to a 100 KB file: files {shown}"
              f" (<= 10 MB: {verdict(size <= 10_000_000)}); {results[f'{key}versions_listed']}"
              f" versions listed, {results[f'{key}restored_exact']}/5 restored byte-exact;"
              f" {results[f'{key}appends_s']:.1f} s")  # fmt: skip
        size, shown = files("sqlite")
        own = results[f"storage.sqlite.{engine}own_bytes"]
        print(f"19. {label}: SQLite database, {INSERTS:,} inserts: kyfs files {shown} vs its"
              f" own {own / mib:.2f} MiB = {size / own:.2f}x (<= 3x: {verdict(size <= 3 * own)});"
              f" {results[f'storage.sqlite.{engine}inserts_s']:.1f} s")  # fmt: skip
        size, shown = files("clone")
        native = results[f"storage.clone.{engine}native_du_bytes"]
        print(f"20. {label}: git clone: kyfs files {shown} vs du -s {native / mib:.1f} MiB ="
              f" {size / native:.2f}x (<= 1.5x: {verdict(size <= 1.5 * native)})")  # fmt: skip
    if "storage.rmrf.growth_same_tree" in results:
        same, other, files, kept, fresh = (
            results[f"storage.rmrf.{name}"]
            for name in ("growth_same_tree", "growth_other_tree", "files_after_compact",
                         "live_and_undo", "fresh_copy")
        )  # fmt: skip
        capped = results["storage.rmrf.growth_after_cap"]
        print(f"21. rm -rf of 100 MB, then the same tree again: files grew {same:.1%} (<= 10%:"
              f" {verdict(same <= 0.10)}); another 100 MB with the removed one kept as undo"
              f" data: grew {other:.1%}; with an undo cap of 8 MiB: grew {capped:.1%} (<= 10%:"
              f" {verdict(capped <= 0.10)}); after trash"
              f" empty, archive expiry and compact: files {files / mib:.1f} MiB vs live + undo"
              f" + search index"
              f" {kept / mib:.1f} MiB = {files / max(kept, 1):.2f}x (<= 1.1x:"
              f" {verdict(files <= 1.1 * kept)}); a copy written afresh {fresh / mib:.1f} MiB"
              f" = {files / fresh:.2f}x")  # fmt: skip
    if "storage.openfiles.peak_rss_mib" in results:
        names = ("peak_rss_mib", "rss_after_close_mib")
        peak, after = (results[f"storage.openfiles.{name}"] for name in names)
        print(f"22. {OPEN_FILES} open files x 4 MiB unsaved: daemon peak RSS {peak:.0f} MiB"
              f" (<= 300: {verdict(peak <= 300)}), after close {after:.0f} MiB (<= 150:"
              f" {verdict(after <= 150)})")  # fmt: skip
    if "storage.speed.write_mib_s.kyfs" in results:
        w = {t: results[f"storage.speed.write_mib_s.{t}"] for t in ("loopback", "kyfs")}
        r = {t: results[f"storage.speed.read_mib_s.{t}"] for t in ("loopback", "kyfs")}
        print(
            f"23. 64 MiB half text, half random: write {w['kyfs']:.0f} MiB/s vs loopback"
            f" {w['loopback']:.0f} ({w['kyfs'] / w['loopback']:.2f}x); cold read"
            f" {r['kyfs']:.0f} vs {r['loopback']:.0f} ({r['kyfs'] / r['loopback']:.2f}x)"
        )
