"""kill -9 at random points of the long operations (issue 25): backup create, backup
restore, migrate run, compact and migrate engine (to PostgreSQL).

Each round starts the real ``python -m kyfs`` command on a copy of a prepared data
directory and kills it with SIGKILL after a random delay, then recovers as the next kyfs
command does (kyfs.transfer.recovery, and an engine opening), and checks:

- nothing over 1 MB is left under the data and state directories outside the
  workspaces and the trash, and no ``.partial`` file anywhere;
- every workspace holds its old or its new content, whole (SHA-256 of every value);
- the command run again completes, with the row counts of an uninterrupted run.

KYFS_KILLS sets the rounds per operation: 10 by default (CI), the 30 of issue 25 in
``make faults``; KYFS_KILLS_SEED the seed. At least half the rounds must kill the command
before it ends (the kill moments follow how long a run takes, see Campaign.kill_at_random).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from kyfs.cli import cli
from kyfs.engine import open_engine_at
from kyfs.platform import paths
from kyfs.platform import reserve as disk_reserve

KILLS = int(os.environ.get("KYFS_KILLS", "10"))
SEED = int(os.environ.get("KYFS_KILLS_SEED", str(int(time.time()))))
TABLES = ("entries", "nodes", "archive", "history", "blocks", "extents")
KILL_BY = 0.9  # kills fall before this fraction of an uninterrupted run's length
LEFT_MAX = 1 << 20  # bytes a killed operation may leave outside workspaces and trash
KEPT = ("workspaces", "trash")  # data directory folders that hold workspaces

Contents = dict[str, dict[str, str]]  # workspace -> key -> SHA-256 of its value


def contents(url: str | None = None) -> Contents:
    """Every workspace's keys and their values' SHA-256, read through the engine."""
    engine = open_engine_at(url)
    try:
        found = {}
        for name in engine.names():
            with engine.using(name) as ws:
                found[name] = {k: hashlib.sha256(ws.get(k)).hexdigest() for k in ws.keys()}
        return found
    finally:
        engine.close()


def row_counts(url: str | None = None) -> dict[str, dict[str, int]]:
    """Rows of each table of every workspace (either engine)."""
    engine = open_engine_at(url)
    try:
        counts = {}
        for name in engine.names():
            with engine.using(name) as ws, ws._snapshot() as conn:
                counts[name] = {
                    t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES
                }
        return counts
    finally:
        engine.close()


def leftovers(home: Path) -> list[tuple[str, int]]:
    """Files under the data and state directories (KYFS_HOME holds both) outside the
    workspaces, the trash, the disk-full reserve and the grants, with their sizes."""
    found = []
    for root, _, files in os.walk(home):
        rel = Path(root).relative_to(home)
        if rel.parts and rel.parts[0] in KEPT:
            continue
        for name in files:
            if not rel.parts and name in (disk_reserve.NAME, "grants.toml"):
                continue  # the disk-full reserve and the grants are kept on purpose
            with_size = os.lstat(os.path.join(root, name)).st_size
            found.append((str(rel / name), with_size))
    return found


def recover() -> list[str]:
    """What the next kyfs command does first: recovery of dead operations, and an engine
    opening (which finishes file moves)."""
    from kyfs.transfer.recovery import recover as run_recovery

    said = run_recovery()
    open_engine_at(None).close()
    return said


def rerun(*args: str) -> None:
    """The command again, uninterrupted (in process: the same code, no start-up cost)."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def populate(seed: int, workspaces: int = 3, keys: int = 60, size: int = 32_000) -> None:
    """Workspaces of random values, with an archive and history (deletes, overwrites)."""
    rng = random.Random(seed)
    engine = open_engine_at(None)
    try:
        for number in range(workspaces):
            name = f"w{number}"
            if not engine.exists(name):
                engine.create(name)
            with engine.using(name) as ws:
                for key in range(keys):
                    ws.set(f"dir{key % 3}/k{key}", rng.randbytes(size))
                for key in range(0, keys, 4):
                    ws.set(f"dir{key % 3}/k{key}", rng.randbytes(size // 2))
                for key in range(1, keys, 6):
                    ws.delete(f"dir{key % 3}/k{key}")
    finally:
        engine.close()


class Campaign:
    """Rounds of one operation on copies of a prepared data directory."""

    def __init__(self, home: Path, tmp: Path, argv: list[str]) -> None:
        self.home, self.argv = home, argv
        self.template = tmp / "template"
        self.rng = random.Random(SEED)
        self.duration = self.startup = 0.0  # seconds
        self.killed = 0
        self.outcomes: Counter[str] = Counter()  # what recovery did, by its first words

    def save_template(self) -> None:
        rerun("workspaces")  # as any first command leaves it (the shared workspace made)
        shutil.rmtree(self.template, ignore_errors=True)
        shutil.copytree(self.home, self.template, symlinks=True)

    def reset(self) -> None:
        shutil.rmtree(self.home)
        shutil.copytree(self.template, self.home, symlinks=True)

    def start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "kyfs", *self.argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )

    def measure(self) -> None:
        """Time one uninterrupted run, and a command that does nothing (the kills fall
        between Python's start-up and the run's end)."""
        began = time.monotonic()
        idle = subprocess.run([sys.executable, "-m", "kyfs", "workspaces"], capture_output=True)
        assert idle.returncode == 0, idle.stderr
        self.startup = time.monotonic() - began
        began = time.monotonic()
        process = self.start()
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
        self.duration = time.monotonic() - began

    def kill_at_random(self) -> None:
        """Run the command and SIGKILL it at a random moment of its run: after most of
        Python's start-up (or half-way, for a run measured shorter than its start-up) and
        before KILL_BY of the run's length. A run that ends before its kill sets that
        length anew: one measured while the machine was busier (CI under load) would
        otherwise leave most rounds unkilled."""
        process = self.start()
        began = time.monotonic()
        late = self.duration * KILL_BY
        delay = self.rng.uniform(min(self.startup * 0.8, late / 2), late)
        try:
            process.wait(timeout=delay)
            self.duration = time.monotonic() - began  # it ran to its end: its length now
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            self.killed += 1
        _, err = process.communicate(timeout=60)
        assert process.returncode in (0, -signal.SIGKILL), err.decode()

    def check_leftovers(self) -> None:
        left = leftovers(self.home)
        assert sum(size for _, size in left) <= LEFT_MAX, sorted(left, key=lambda x: -x[1])[:5]
        partial = [p for p, _ in left if p.endswith(".partial")]
        assert not partial

    def rounds(self, check: Callable[[int], None]) -> None:
        """KILLS rounds: reset, kill, recover, ``check(round)``."""
        for number in range(KILLS):
            self.reset()
            self.kill_at_random()
            said = recover()
            self.outcomes.update(" ".join(line.split()[:2]) for line in said)
            if not said:
                self.outcomes["nothing to do"] += 1
            self.check_leftovers()
            check(number)
        print(f"{' '.join(self.argv[:2])}: {self.killed} of {KILLS} killed, run"
              f" {self.duration:.2f} s (start-up {self.startup:.2f} s);"
              f" recovery: {dict(self.outcomes)}")  # fmt: skip
        assert self.killed >= KILLS // 2, f"only {self.killed} of {KILLS} runs were killed"


def one_of(found: Contents, *choices: Contents) -> None:
    """Every workspace of ``found`` (and of the choices) is whole in one of ``choices``."""
    for name in set(found) | {n for c in choices for n in c}:
        assert any(found.get(name) == c.get(name) for c in choices), name


@pytest.fixture
def campaign(kyfs_home: Path, tmp_path: Path) -> Callable[[list[str]], Campaign]:
    return lambda argv: Campaign(kyfs_home, tmp_path, argv)


def test_backup_create_killed(campaign: Callable[..., Campaign], tmp_path: Path) -> None:
    populate(1)
    output = tmp_path / "out.tar.gz"
    run = campaign(["backup", "create", "-q", "-o", str(output)])
    run.save_template()
    before, counts = contents(), row_counts()
    run.measure()

    def check(_: int) -> None:
        assert not output.with_name(output.name + ".partial").exists()
        if output.exists():  # the archive appears whole or not at all
            rerun("backup", "verify", str(output))
        assert contents() == before
        output.unlink(missing_ok=True)
        rerun("backup", "create", "-q", "-o", str(output))
        rerun("backup", "verify", str(output))
        assert row_counts() == counts
        output.unlink()

    run.rounds(check)


def test_backup_restore_killed(campaign: Callable[..., Campaign], tmp_path: Path) -> None:
    populate(2, workspaces=4)  # what the backup holds: four workspaces
    archive = tmp_path / "b.tar.gz"
    rerun("backup", "create", "-q", "-o", str(archive))
    new = contents()
    run = campaign(["backup", "restore", str(archive), "--force"])
    shutil.rmtree(run.home)
    run.home.mkdir()
    populate(3, workspaces=3)  # what is here: three workspaces with other values
    run.save_template()
    old = contents()
    run.measure()
    counts = row_counts()
    assert contents() == new

    def check(_: int) -> None:
        one_of(contents(), old, new)
        rerun("backup", "restore", str(archive), "--force")
        assert contents() == new
        assert row_counts() == counts

    run.rounds(check)


def scoped_source(path: Path, scopes: int = 4, keys: int = 500) -> None:
    """A KyCLI-style scoped file: live keys, an archive and an audit log per scope."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE kvstore (scope TEXT, key TEXT, value TEXT, expires_at DATETIME,"
        " PRIMARY KEY (scope, key))"
    )
    conn.execute("CREATE TABLE archive (id INTEGER PRIMARY KEY, scope TEXT, key TEXT,"
                 " value TEXT, deleted_at DATETIME)")  # fmt: skip
    conn.execute("CREATE TABLE audit_log (id INTEGER PRIMARY KEY, scope TEXT, key TEXT,"
                 " value TEXT, timestamp DATETIME)")  # fmt: skip
    for scope in range(scopes):
        for key in range(keys):
            value = f"value {scope} {key} " * 20
            conn.execute(
                "INSERT INTO kvstore VALUES (?, ?, ?, NULL)", (f"s{scope}", f"k{key}", value)
            )
            conn.execute("INSERT INTO audit_log (scope, key, value, timestamp) VALUES"
                         " (?, ?, ?, ?)", (f"s{scope}", f"k{key}", value,
                                           f"2024-01-0{1 + key % 9} 00:00:00"))  # fmt: skip
            if key % 5 == 0:
                conn.execute("INSERT INTO archive (scope, key, value, deleted_at) VALUES"
                             " (?, ?, ?, '2024-02-02 00:00:00')",
                             (f"s{scope}", f"gone{key}", value))  # fmt: skip
    conn.commit()
    conn.close()


def test_migrate_run_killed(campaign: Callable[..., Campaign], tmp_path: Path) -> None:
    source = tmp_path / "scoped.db"
    scoped_source(source)
    run = campaign(["migrate", "run", str(source), "--quiet"])
    run.save_template()
    old = contents()
    run.measure()
    new, counts = contents(), row_counts()
    assert len(new) > len(old)

    def check(_: int) -> None:
        one_of(contents(), old, new)
        rerun("migrate", "run", str(source), "--quiet", "--merge", "keep")
        assert contents() == new
        assert row_counts() == counts

    run.rounds(check)


def test_compact_killed(campaign: Callable[..., Campaign]) -> None:
    populate(4, workspaces=3, keys=120)
    engine = open_engine_at(None)
    for name in engine.names():  # free pages and a search index to merge
        with engine.using(name) as ws:
            for key in ws.keys()[::2]:
                ws.delete(key)
            ws.purge_archive(time.time_ns() + 1)
    engine.close()
    run = campaign(["compact", "--all"])
    run.save_template()
    before, counts = contents(), row_counts()
    run.measure()

    def check(_: int) -> None:
        assert contents() == before
        rerun("compact", "--all")
        assert row_counts() == counts
        for name in before:
            conn = sqlite3.connect(paths.workspace_file(name))
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            conn.close()

    run.rounds(check)


def _empty(url: str) -> None:
    engine = open_engine_at(url)
    try:
        for name in engine.names():
            engine.drop(name)
        engine.empty_trash()
    finally:
        engine.close()


def test_migrate_engine_killed(campaign: Callable[..., Campaign], pg_url: str) -> None:
    populate(5, workspaces=3, keys=30)  # each value a round-trip or more to the server
    run = campaign(["migrate", "engine", "--from", "sqlite", "--to", pg_url])
    run.save_template()
    source, counts = contents(), row_counts()
    run.measure()
    assert contents(pg_url) == source and row_counts(pg_url) == counts

    def check(_: int) -> None:
        one_of(contents(pg_url), {}, source)
        rerun("migrate", "engine", "--from", "sqlite", "--to", pg_url)
        assert contents(pg_url) == source
        assert row_counts(pg_url) == counts
        _empty(pg_url)

    _empty(pg_url)
    run.rounds(check)


MOVE_KILLED = r"""
import os, signal, sys
from pathlib import Path
from kyfs.engine import open_engine_at
from kyfs.platform import journal, paths

data, source, target = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
engine = open_engine_at(None, cache=True, autocheckpoint=False)  # kept open
with engine.using("a") as ws:
    ws.set("late", b"only in the WAL")  # committed, not folded in: the -wal holds it
journal.begin("move", data, moves=[[str(source), str(target)]])
os.rename(source, target)  # the file moved; killed before its -wal follows
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_move_killed_midway_is_finished_by_the_next_engine(kyfs_home: Path) -> None:
    engine = open_engine_at(None)
    engine.create("a")
    with engine.using("a") as ws:
        ws.set("early", b"folded in")
    engine.close()
    source = paths.workspace_file("a")
    target = paths.trash_file("a", "20260101T000000000000Z")
    target.parent.mkdir(parents=True, exist_ok=True)
    killed = subprocess.run(
        [sys.executable, "-c", MOVE_KILLED, str(kyfs_home), str(source), str(target)],
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert paths.sidecar_files(source)[0].stat().st_size > 0  # the WAL stayed behind
    open_engine_at(None).close()  # the next command's engine finishes the move
    assert not any(p.exists() for p in (source, *paths.sidecar_files(source)))
    restored = open_engine_at(None)
    assert restored.restore_trash("a") == ("a", 0)
    with restored.using("a") as ws:
        assert ws.get("late") == b"only in the WAL" and ws.get("early") == b"folded in"
    restored.close()
    assert leftovers(kyfs_home) == []


BACKUP_KILLED = r"""
import os, signal, sys
from kyfs.platform import journal

op = journal.begin("backup-create", partial=sys.argv[1])
(op.folder / "w0.db").write_bytes(os.urandom(2 << 20))
open(sys.argv[1], "wb").write(os.urandom(1 << 20))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_next_command_recovers_and_says_so(kyfs_home: Path, tmp_path: Path) -> None:
    partial = tmp_path / "out.tar.gz.partial"
    killed = subprocess.run([sys.executable, "-c", BACKUP_KILLED, str(partial)])
    assert killed.returncode == -signal.SIGKILL
    assert partial.exists() and sum(s for _, s in leftovers(kyfs_home)) > LEFT_MAX
    first = subprocess.run([sys.executable, "-m", "kyfs", "workspaces"], capture_output=True)
    assert first.returncode == 0, first.stderr
    assert b"kyfs: removed what a killed backup create left" in first.stderr
    assert not partial.exists() and leftovers(kyfs_home) == []
    second = subprocess.run([sys.executable, "-m", "kyfs", "workspaces"], capture_output=True)
    assert second.stderr == b""  # said once


def test_an_older_kyfs_spill_leftovers_go_at_the_next_command(kyfs_home: Path) -> None:
    spill = paths.make_private_dir(paths.spill_dir())
    old_copy = spill / "tmpabcd1234"  # what an older kyfs's killed backup left
    old_copy.mkdir()
    (old_copy / "w0.db").write_bytes(os.urandom(1 << 20))
    (spill / "stage-x.db").write_bytes(b"x" * 1000)
    hour_ago = time.time() - 3700
    for path in (old_copy, spill / "stage-x.db"):
        os.utime(path, (hour_ago, hour_ago))
    fresh = spill / "stage-now.db"  # another command's, maybe still at work
    fresh.write_bytes(b"y")
    done = subprocess.run([sys.executable, "-m", "kyfs", "workspaces"], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert b"removed 2 leftovers (1049576 bytes)" in done.stderr
    assert sorted(os.listdir(spill)) == ["stage-now.db"]


CLEANUP_KILLED = r"""
import os, signal
from kyfs.platform import journal

op = journal.begin("backup-create", partial="/nonexistent/out.partial")
(op.folder / "w0.db").write_bytes(os.urandom(2 << 20))
tomb = op.folder.with_name("gone." + op.folder.name)
os.rename(op.folder, tomb)  # what Operation.close does first, then the deletion...
for name in ("journal.json", "lock"):  # ...killed after these, before the snapshot
    os.unlink(tomb / name)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_kill_in_the_middle_of_an_operations_cleanup_leaves_nothing(kyfs_home: Path) -> None:
    killed = subprocess.run([sys.executable, "-c", CLEANUP_KILLED])
    assert killed.returncode == -signal.SIGKILL
    assert sum(s for _, s in leftovers(kyfs_home)) > LEFT_MAX
    done = subprocess.run([sys.executable, "-m", "kyfs", "workspaces"], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert leftovers(kyfs_home) == []
