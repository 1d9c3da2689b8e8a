"""``python -m bench.chunking``: fixed-size against content-defined (FastCDC) chunking for
the block store, the measurement that chose its cuts (docs/design.md, "Chosen by
measurement").

Every version of every file of a workload goes into one simulated content-addressed
store: chunks are keyed by blake2b-256, stored once, zstd-compressed per chunk (kept raw
unless compression saves >= 10%). For each scheme it reports the stored bytes, the
distinct chunks and the chunk references (rows of the per-version chunk lists), and the
same plus the SQLite rows that would place them. A second part measures the throughput
of cutting, hashing and compressing one 64 MiB buffer, and three zstd levels.

Workloads: 1,000 appends to a log; every version of every file in this repository's git
history (a clone in a temporary directory) and 30 stdlib modules with 50 line edits
each; a SQLite database in WAL mode (in a temporary directory); a 64 MiB file with
random overwrites; 8 MiB of text with random inserts. All are seeded, but workload 3's
numbers vary a little from run to run: SQLite puts random salts in the WAL's headers.

Run from the project root with the venv's python, about a minute on 2 cores:

    .venv/bin/python -m bench.chunking [workloads] [throughput] [-o FILE]

Both parts by default. The tables go to stdout (and to FILE with ``-o``). Nothing here
is a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO, TypeVar

import zstandard
from fastcdc import fastcdc

T = TypeVar("T")
Cuts = list[tuple[int, int]]  # (offset, length) of each chunk
Cutter = Callable[[bytes], Cuts]
Workload = Callable[[Path], Iterable[tuple[str, bytes]]]  # scratch dir -> (file, bytes)

MiB = 1 << 20
REPOSITORY = Path(__file__).resolve().parent.parent  # this project's own git repository
STDLIB = sysconfig.get_paths()["stdlib"]
LEVEL = 3  # zstd level of the simulated store
# SQLite bytes per chunk-index row (id, 32-byte hash UNIQUE, refs, length) and per
# reference row ((version, seq) -> chunk, WITHOUT ROWID), measured after VACUUM.
ROW_CHUNK, ROW_REF = 89, 14

_copies: list[TextIO] = []  # files that get the tables besides stdout (-o)


def say(s: str = "") -> None:
    """Print a line of the report (and write it to the -o file, if any)."""
    print(s, flush=True)
    for f in _copies:
        f.write(s + "\n")
        f.flush()


# ---------------------------------------------------------------- chunking schemes
def fixed(size: int) -> Cutter:
    """Cuts every ``size`` bytes."""

    def cut(data: bytes) -> Cuts:
        return [(o, min(size, len(data) - o)) for o in range(0, len(data), size)]

    return cut


def cdc(avg: int) -> Cutter:
    """FastCDC cuts of average ``avg``, at least avg/4 and at most avg*4 bytes."""

    def cut(data: bytes) -> Cuts:
        return [(c.offset, c.length) for c in fastcdc(data, avg // 4, avg, avg * 4)]

    return cut


def whole(data: bytes) -> Cuts:
    """One chunk per version: the store before chunking (one value per version)."""
    return [(0, len(data))] if data else []


SCHEMES: dict[str, Cutter] = {
    "fixed-4k": fixed(4096),
    "fixed-16k": fixed(16384),
    "fixed-64k": fixed(65536),
    "cdc-4k": cdc(4096),
    "cdc-8k": cdc(8192),
    "cdc-16k": cdc(16384),
    "cdc-32k": cdc(32768),
}
BASELINE: dict[str, Cutter] = {"whole-file": whole}


def stored_size(cctx: zstandard.ZstdCompressor, piece: bytes | memoryview) -> int:
    """Bytes a chunk takes in the store: compressed, or raw if that saves less than 10%."""
    c = len(cctx.compress(piece))
    return c if c <= 0.9 * len(piece) else len(piece)


class Store:
    """A simulated content-addressed store: sizes and counts only, no bytes kept."""

    def __init__(self) -> None:
        self.cctx = zstandard.ZstdCompressor(level=LEVEL)
        self.chunks: dict[bytes, int] = {}  # digest -> stored (compressed or raw) size
        self.refs = self.logical = self.first = self.versions = 0
        self.keys: set[str] = set()

    def put(self, key: str, data: bytes, cut: Cutter) -> None:
        """Store one version of file ``key``, cut by ``cut``."""
        mv = memoryview(data)
        for off, ln in cut(data):
            piece = mv[off : off + ln]
            d = hashlib.blake2b(piece, digest_size=32).digest()
            self.refs += 1
            if d not in self.chunks:
                self.chunks[d] = stored_size(self.cctx, piece)
        self.logical += len(data)
        self.versions += 1
        if key not in self.keys:  # "first version" = first version of each file
            self.keys.add(key)
            self.first += len(data)


# ---------------------------------------------------------------- data generators
def log_line(rng: random.Random, i: int) -> bytes:
    """Log line number ``i``: exactly 100 bytes."""
    s = (
        f"2026-12-04T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
        f" worker-{rng.randrange(8)} request id={rng.getrandbits(64):016x}"
        f" status={rng.choice((200, 200, 200, 201, 404, 500))} ms={rng.randrange(1, 900)}"
        f" path=/api/v1/{rng.choice(('users', 'items', 'orders'))}/{rng.randrange(10**5)}"
    )
    return (s[:99].ljust(99) + "\n").encode()


@functools.cache
def text_corpus(n: int) -> bytes:
    """n bytes of real text: the stdlib's .py sources in sorted order (log lines if short)."""
    parts, total = [], 0
    for root, dirs, files in os.walk(STDLIB):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "__pycache__"))
        for f in sorted(files):
            if f.endswith(".py") and total < n:
                parts.append(Path(root, f).read_bytes())
                total += len(parts[-1])
    rng, i = random.Random(9), 0
    while total < n:
        parts.append(log_line(rng, i))
        total += 100
        i += 1
    return b"".join(parts)[:n]


@functools.cache
def mixed(n: int) -> bytes:
    """Alternating 1 MiB segments of random bytes and real text (half and half)."""
    rng, text = random.Random(4), text_corpus(n // 2)
    return b"".join(
        rng.randbytes(MiB) if i % 2 == 0 else text[(i // 2) * MiB : (i // 2 + 1) * MiB]
        for i in range(n // MiB)
    )


# ---------------------------------------------------------------- workloads: yield (file, bytes)
def appends(scratch: Path) -> Iterator[tuple[str, bytes]]:
    """A 100 KB log, then 1,000 versions each one 100-byte line longer."""
    rng = random.Random(1)
    buf = bytearray(b"".join(log_line(rng, i) for i in range(1000)))  # 100,000 bytes
    yield "log", bytes(buf)
    for i in range(1000, 2000):
        buf += log_line(rng, i)
        yield "log", bytes(buf)


@functools.cache
def git_versions(scratch: Path) -> list[tuple[str, bytes]]:
    """Every distinct blob of every path along `git log --all` of this repository, oldest
    first (from a mirror clone in ``scratch``)."""
    repo = scratch / "repo.git"
    if not repo.is_dir():
        subprocess.run(
            ["git", "clone", "-q", "--mirror", REPOSITORY.as_uri(), str(repo)], check=True
        )
    git = ["git", "-C", str(repo)]
    log = subprocess.run(
        [
            *git,
            "log",
            "--all",
            "--reverse",
            "--topo-order",
            "--format=",
            "--raw",
            "--no-abbrev",
            "--no-renames",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    order, seen = [], set()
    for line in log.splitlines():
        if not line.startswith(":"):
            continue
        meta, path = line.split("\t", 1)
        mode, sha = meta.split()[1], meta.split()[3]
        if mode not in ("000000", "160000") and (path, sha) not in seen:
            seen.add((path, sha))
            order.append((path, sha))
    shas = sorted({s for _, s in order})
    out = subprocess.run(
        [*git, "cat-file", "--batch"],
        input="".join(s + "\n" for s in shas).encode(),
        capture_output=True,
        check=True,
    ).stdout
    blobs, pos = {}, 0
    for s in shas:
        nl = out.index(b"\n", pos)
        size = int(out[pos:nl].split()[2])
        blobs[s], pos = out[nl + 1 : nl + 1 + size], nl + 2 + size
    return [(p, blobs[s]) for p, s in order]


def stdlib_edits(scratch: Path) -> Iterator[tuple[str, bytes]]:
    """30 stdlib files of 20-200 KB; original + 50 versions, each one random 1-3 line edit."""
    rng = random.Random(2)
    names = sorted(
        f
        for f in os.listdir(STDLIB)
        if f.endswith(".py") and 20_000 <= os.path.getsize(os.path.join(STDLIB, f)) <= 200_000
    )
    for name in rng.sample(names, 30):
        lines = Path(STDLIB, name).read_bytes().splitlines(keepends=True)
        yield name, b"".join(lines)
        for v in range(50):
            pos, k, op = rng.randrange(len(lines) + 1), rng.randint(1, 3), rng.choice("idr")
            new = [
                (
                    f"    value_{rng.randrange(10**6)}"
                    f" = compute({rng.randrange(1000)}, 'edit {v}')\n"
                ).encode()
                for _ in range(k)
            ]
            if op == "i":
                lines[pos:pos] = new
            elif op == "d":
                del lines[pos : pos + k]
            else:
                lines[pos : pos + k] = new
            yield name, b"".join(lines)


@functools.cache
def sqlite_snaps(scratch: Path) -> list[tuple[str, bytes]]:
    """WAL-mode db, 10,000 one-row transactions; snapshot main file and -wal every 100."""
    db = scratch / "w3.db"
    wal = db.with_name(db.name + "-wal")
    con = sqlite3.connect(db, isolation_level=None)  # autocommit: one txn per INSERT
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")  # sync mode: no effect on bytes
    con.execute("CREATE TABLE ev(id INTEGER PRIMARY KEY, t TEXT)")
    rng, snaps = random.Random(3), []
    for i in range(1, 10_001):
        row = (
            f"user={rng.randrange(10**4)} action={rng.choice(('view', 'click', 'buy'))}"
            f" page=/p/{rng.randrange(10**6)} n={i}"
        )
        con.execute("INSERT INTO ev(t) VALUES (?)", (row.ljust(60)[:60],))
        if i % 100 == 0:
            snaps += [("db", db.read_bytes()), ("wal", wal.read_bytes())]
    con.close()
    return snaps


def overwrites(scratch: Path) -> Iterator[tuple[str, bytes]]:
    """64 MiB mixed, then 20 versions each with 4 KiB overwritten at a random offset."""
    rng, buf = random.Random(5), bytearray(mixed(64 * MiB))
    yield "big", bytes(buf)
    for _ in range(20):
        off = rng.randrange(len(buf) - 4096)
        buf[off : off + 4096] = rng.randbytes(4096)
        yield "big", bytes(buf)


def inserts(scratch: Path) -> Iterator[tuple[str, bytes]]:
    """8 MiB of text, then 20 versions each with 100 bytes inserted at a random position."""
    rng, buf = random.Random(6), bytearray(text_corpus(8 * MiB))
    yield "text", bytes(buf)
    for _ in range(20):
        pos = rng.randrange(len(buf) + 1)
        buf[pos:pos] = (f"# inserted {rng.getrandbits(64):016x} ".ljust(99, "x") + "\n").encode()
        yield "text", bytes(buf)


WORKLOADS: list[tuple[str, Workload]] = [
    ("1. appends: 100 KB log file + 1,000 versions each appending one 100-byte line", appends),
    (
        "2a. real edit history: every blob version of every path in `git log --all`"
        " of this repository",
        git_versions,
    ),
    (
        "2b. 30 stdlib .py files (20-200 KB), original + 50 versions each with one random"
        " 1-3 line edit",
        stdlib_edits,
    ),
    (
        "3. SQLite WAL db, 10,000 single-row txns; main file and -wal snapshotted every 100 txns",
        sqlite_snaps,
    ),
    (
        "4. 64 MiB mixed (half random, half text) + 20 versions each overwriting 4 KiB"
        " at a random offset",
        overwrites,
    ),
    ("5. 8 MiB text + 20 versions each inserting 100 bytes at a random position", inserts),
]


# ---------------------------------------------------------------- reports
def run_workloads(scratch: Path) -> None:
    """Every workload into a fresh store per scheme: one table per workload."""
    for title, workload in WORKLOADS:
        say(f"== {title}")
        header = None
        for name, cut in {**SCHEMES, **BASELINE}.items():
            st, t0 = Store(), time.perf_counter()
            for key, data in workload(scratch):
                st.put(key, data, cut)
            stored = sum(st.chunks.values())
            if header is None:
                header = (
                    f"   {len(st.keys)} file(s), {st.versions} versions,"
                    f" first version(s) {st.first:,} B, all versions {st.logical:,} B"
                    f" (zstd-{LEVEL}, blake2b-256)"
                )
                say(header)
                say(
                    f"   {'scheme':<11}{'stored B':>13}{'x first':>8}{'% of all':>9}{'distinct':>9}"
                    f"{'refs':>9}{'B/ref':>11}{'+meta B':>13}{'sec':>6}"
                )
            meta = stored + ROW_CHUNK * len(st.chunks) + ROW_REF * st.refs
            say(
                f"   {name:<11}{stored:>13,}{stored / st.first:>8.2f}"
                f"{100 * stored / st.logical:>8.2f}%{len(st.chunks):>9,}{st.refs:>9,}"
                f"{st.logical // max(st.refs, 1):>11,}{meta:>13,}"
                f"{time.perf_counter() - t0:>6.1f}"
            )
        say(
            f"   (+meta = stored + {ROW_CHUNK} B per distinct chunk + {ROW_REF} B per reference,"
            " as SQLite rows)"
        )
        say()


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """fn's result and its best time of 2 runs, in seconds."""
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        r = fn()
        best = min(best, time.perf_counter() - t0)
    return r, best


def hash_all(mv: memoryview, cuts: Cuts) -> list[bytes]:
    """The blake2b-256 digest of every chunk."""
    return [hashlib.blake2b(mv[o : o + n], digest_size=32).digest() for o, n in cuts]


def compress_all(cctx: zstandard.ZstdCompressor, mv: memoryview, cuts: Cuts) -> list[int]:
    """The stored size of every chunk."""
    return [stored_size(cctx, mv[o : o + n]) for o, n in cuts]


def run_throughput() -> None:
    """Cut, hash and compress one 64 MiB buffer per scheme; then zstd levels 1, 3 and 6."""
    buf = mixed(64 * MiB)
    mv = memoryview(buf)
    mb = len(buf) / 1e6
    cctx = zstandard.ZstdCompressor(level=LEVEL)
    say(
        "== Throughput on one 64 MiB buffer (half random, half text), single thread,"
        f" zstd-{LEVEL}; MB/s = 1e6 B/s"
    )
    say(
        f"   {'scheme':<11}{'chunks':>8}{'chunk':>9}{'hash':>9}{'zstd':>9}{'total':>9}"
        f"{'us/chunk':>10}"
    )
    for name, cut in SCHEMES.items():
        cuts, tc = timed(functools.partial(cut, buf))
        _, th = timed(functools.partial(hash_all, mv, cuts))
        _, tz = timed(functools.partial(compress_all, cctx, mv, cuts))
        say(
            f"   {name:<11}{len(cuts):>8,}{mb / tc:>9.0f}{mb / th:>9.0f}{mb / tz:>9.0f}"
            f"{mb / (tc + th + tz):>9.0f}{1e6 * tc / len(cuts):>10.2f}"
        )
    say(
        "   (chunk = boundary finding incl. Python per-chunk overhead;"
        " total = chunk + hash + zstd in series)"
    )
    say()
    say("== zstd level: stored bytes of distinct chunks (raw if saving < 10%) and compression MB/s")
    say(
        f"   {'scheme':<11}{'data':<14}{'level':>6}{'stored B':>14}{'% of raw':>9}{'zstd MB/s':>11}"
    )
    for name in ("cdc-8k", "cdc-16k", "fixed-64k"):
        for dname, data in (("mixed 64 MiB", buf), ("text 8 MiB", text_corpus(8 * MiB))):
            dmv, cuts = memoryview(data), SCHEMES[name](data)
            for level in (1, 3, 6):
                c = zstandard.ZstdCompressor(level=level)
                sizes, tz = timed(functools.partial(compress_all, c, dmv, cuts))
                stored = sum(sizes)
                say(
                    f"   {name:<11}{dname:<14}{level:>6}{stored:>14,}"
                    f"{100 * stored / len(data):>8.1f}%{len(data) / 1e6 / tz:>11.0f}"
                )
    say()


def main(argv: list[str] | None = None) -> None:
    """Run the parts asked for (both by default) and print their tables."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.chunking",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "parts", nargs="*", metavar="workloads|throughput", help="what to run (default: both)"
    )
    parser.add_argument("-o", "--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    parts = set(args.parts) or {"workloads", "throughput"}
    if unknown := parts - {"workloads", "throughput"}:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="kyfs-chunking-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        if args.output:
            _copies.append(stack.enter_context(args.output.open("w")))
            stack.callback(_copies.clear)
        say(
            f"# kyfs chunking measurement  (python {sys.version.split()[0]},"
            f" zstandard {zstandard.__version__})\n"
        )
        if "throughput" in parts:
            run_throughput()
        if "workloads" in parts:
            run_workloads(scratch)
        say(f"# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
