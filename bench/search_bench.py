"""Search workload: N keys of short text over 10 workspaces.

Compares, in one run: ``kyfs search --all`` (a new process per query, as a user
runs it), ``grep -rl`` on a native copy of the same data, and ``grep -rl``
through the kyfs mount. Prints in-process query latency (p50/p95) and the size
of the search index as a share of the database size.
"""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import drop_caches, kyfs_mount

WORKSPACES = 10


def _words(rng: random.Random, count: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(count)]


def build(scratch: Path, keys: int, rng: random.Random) -> tuple[Path, Path, list[str]]:
    """Create the workspaces (in KYFS_HOME=scratch/kyfs-home) and a native copy."""
    from kyfs.engine.sqlite.engine import SqliteEngine

    vocabulary = _words(rng, 20_000)
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(vocabulary))))
    home = scratch / "kyfs-home"
    native = scratch / "search-native"
    os.environ["KYFS_HOME"] = str(home)
    workspaces = SqliteEngine()
    per = keys // WORKSPACES
    for w in range(WORKSPACES):
        name = f"ws{w:02d}"
        workspaces.create(name)
        store = workspaces.open(name)
        for i in range(per):
            key = f"notes/{i // 100:03d}/note-{i:05d}.txt"
            words = rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(8, 20))
            text = " ".join(words)  # Zipf-like word frequencies
            store.set(key, text.encode())
            path = native / name / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        store.close()
    workspaces.close()
    queries = [vocabulary[i] for i in (5, 50, 200, 1000, 3000, 8000)]
    return home, native, queries


def _index_share(home: Path) -> float:
    index = total = 0
    for db in (home / "workspaces").glob("*.db"):
        conn = sqlite3.connect(db)
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            total += size
            if name.startswith("search_"):
                index += size
        conn.close()
    return index / total if total else float("nan")


def _time(command: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of one run; a failure (grep's "no match", 1, is fine) stops the bench."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{command[:4]} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def run(scratch: Path, quick: bool) -> dict[str, Any]:
    """Build the data, measure, and return the figures."""
    from kyfs import search

    keys = 10_000 if quick else 100_000
    rng = random.Random(4)
    started = time.perf_counter()
    home, native, queries = build(scratch, keys, rng)
    env = {**os.environ, "KYFS_HOME": str(home)}
    results: dict[str, Any] = {"search.keys": keys, "search.build_s": time.perf_counter() - started}
    names = [f"ws{w:02d}" for w in range(WORKSPACES)]
    latencies = []
    for _ in range(3):
        for query in queries:
            begin = time.perf_counter()
            search.search(names, query, limit=20)
            latencies.append(time.perf_counter() - begin)
    latencies.sort()
    results["search.p50_ms"] = 1000 * statistics.median(latencies)
    results["search.p95_ms"] = 1000 * latencies[int(0.95 * (len(latencies) - 1))]
    cli = [sys.executable, "-m", "kyfs", "search", "--all", "--keys-only", "--limit", "20"]
    drop_caches()
    results["search.kyfs_cli_s"] = statistics.median(_time([*cli, q], env) for q in queries)
    drop_caches()
    results["search.grep_native_s"] = statistics.median(
        _time(["grep", "-rl", q, str(native)]) for q in queries
    )
    results["search.index_share"] = _index_share(home)
    results.update(semantic(scratch, keys, rng))
    with kyfs_mount(scratch, home=home) as target:
        root = target.root.parent
        mount_queries = queries[:2] if not quick else queries
        drop_caches()
        results["search.grep_mount_s"] = statistics.median(
            _time(["grep", "-rl", q, str(root)]) for q in mount_queries
        )
    return results


def semantic(scratch: Path, keys: int, rng: random.Random) -> dict[str, Any]:
    """Semantic search on one workspace of ``keys`` notes (sentences of the labelled set's
    notes, shuffled into new ones): how fast the default embedder indexes on one CPU
    (values/s, the process pinned to one CPU), and the p50/p95 of an in-process
    semantic query over all of them (the query's own embedding included)."""
    import json

    from kyfs import search
    from kyfs.app import catch_up
    from kyfs.core.nodes import ImportItem
    from kyfs.engine.sqlite.engine import SqliteEngine
    from kyfs.platform import embedders

    data = Path(__file__).resolve().parent.parent / "tests" / "data" / "semantic"
    notes = [json.loads(line)["value"] for line in (data / "notes.jsonl").read_text().splitlines()]
    sentences = [part.strip() for note in notes for part in note.split(". ") if part.strip()]
    queries = [
        json.loads(line)["query"] for line in (data / "queries.jsonl").read_text().splitlines()
    ]
    engine = SqliteEngine(scratch / "semantic")
    engine.create("vec")
    results: dict[str, Any] = {"semantic.keys": keys}
    cpus = os.sched_getaffinity(0)
    try:
        with engine.using("vec") as workspace:
            items = (
                ImportItem(
                    f"notes/{i // 1000:03d}/{i:06d}", ". ".join(rng.sample(sentences, 3)).encode()
                )
                for i in range(keys)
            )
            workspace.import_entries(items)
            workspace.flush_index()
            embedder = embedders.load()
            os.sched_setaffinity(0, {min(cpus)})
            began = time.perf_counter()
            done = catch_up(workspace, embedder)
            results["semantic.index_per_s"] = done / (time.perf_counter() - began)
            os.sched_setaffinity(0, cpus)
            latencies = []
            for query in queries[:30]:
                start = time.perf_counter()
                search.semantic(["vec"], query, limit=10, use=engine.using, keep=False)
                latencies.append(time.perf_counter() - start)
            latencies.sort()
            results["semantic.p50_ms"] = 1000 * statistics.median(latencies)
            results["semantic.p95_ms"] = 1000 * latencies[int(0.95 * (len(latencies) - 1))]
            space = sum(
                len(row[0]) + len(row[1]) + len(row[2])
                for row in workspace._conn.execute(  # type: ignore[attr-defined]
                    "SELECT items, scales, vectors FROM vector_chunks"
                )
            )
            results["semantic.vector_bytes_per_key"] = space / keys
    finally:
        os.sched_setaffinity(0, cpus)
        engine.close()
    return results


def report(results: dict[str, Any]) -> None:
    """Print the search figures."""
    grep = results["search.grep_native_s"]
    print(f"\nsearch: {results['search.keys']} keys in {WORKSPACES} workspaces")
    print(f"{'workload':<34}{'seconds':>10}{'/ grep native':>15}")
    for label, key in [
        ("kyfs search --all (new process)", "search.kyfs_cli_s"),
        ("grep -rl, native copy", "search.grep_native_s"),
        ("grep -rl, through the mount", "search.grep_mount_s"),
    ]:
        print(f"{label:<34}{results[key]:>10.3f}{results[key] / grep:>14.2f}x")
    p50, p95 = results["search.p50_ms"], results["search.p95_ms"]
    share = 100 * results["search.index_share"]
    print(f"in-process query p50 {p50:.1f} ms, p95 {p95:.1f} ms; index = {share:.0f}% of the db")
    if "semantic.keys" in results:
        print(
            f"semantic, {results['semantic.keys']} keys in one workspace: indexing"
            f" {results['semantic.index_per_s']:.0f} values/s on one CPU (target >= 1000),"
            f" query p50 {results['semantic.p50_ms']:.1f} ms, p95"
            f" {results['semantic.p95_ms']:.1f} ms (target < 100),"
            f" {results['semantic.vector_bytes_per_key']:.0f} bytes of vectors per key"
        )
