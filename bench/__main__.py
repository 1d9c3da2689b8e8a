"""``make bench`` / ``python -m bench [--quick]``: kyfs beside a native directory and a bare
Python FUSE loopback, in one run, as medians and ratios.

Workloads 18 to 23 (bench/storage.py) measure storage against issue 24's budgets: bytes on
disk after appends, a SQLite database, a git clone and an rm -rf, the daemon's memory with
400 open files, and the block store's own speed. Workload 24 (bench/snapshots.py): a
snapshot and a fork of a 1 GiB workspace, and a diff after 100 changes.

Workloads 12 to 16 (bench/real_trees.py) run on real trees: the stdlib's pure-Python
packages (tar x, cp -r, grep -r, find, rm -rf), a git clone of this repository, the
locked-workspace stall, four readers on four workspaces, how soon a CLI change shows
through the mount. Then, on N keys of 64 bytes
in 100 directories (N = 10,000, or 2,000 with --quick):

 1. create via the shell (echo > file)      7. cp -r of an N-file tree in, then diff -r
 2. cold cat of all                          8. a 1 GiB file written and read with dd,
 3. cold grep -r                                and the daemon's peak RSS
 4. cold ls -lR                              9. `kyfs get` cold start against the import floor
 5. four parallel cats, cold                10. two writers on two workspaces against two
 6. warm re-read of unchanged keys              writers on one (throughput)
                                            11. search (bench/search_bench.py)

"Cold" rounds drop the kernel's caches first (root: /proc/sys/vm/drop_caches). Each
workload runs a warm-up and then ROUNDS rounds (5; 2 with --quick). Results are printed
and written as JSON to bench/results/. Nothing here is a test: nothing is asserted.
python -m bench.chunking: the measurement that chose the block store's chunking (docs/design.md)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kyfs
from bench import real_trees, search_bench, snapshots, storage
from bench.harness import TARGETS, Target, drop_caches, load_average, median_time, sh, workdir

VALUE = "x" * 63  # 64 bytes with echo's newline
TARGETS_TABLE = [  # (label, key, baseline, better, target ratio)
    ("1. create via the shell (s)", "create", "loopback", "lower", 1.0),
    ("2. cold cat (s)", "cold_cat", "loopback", "lower", 1.0),
    ("3. cold grep -r (s)", "cold_grep", "loopback", "lower", 1.0),
    ("4. cold ls -lR (s)", "cold_ls", "loopback", "lower", 1.0),
    ("5. 4 parallel cats, cold (s)", "parallel_cat", "loopback", "lower", None),
    ("6. warm re-read (s)", "warm_cat", "native", "lower", 1.5),
    ("7. cp -r + diff -r (s)", "cp_r", "loopback", "lower", 1.0),
    ("8. dd write 1 GiB (MiB/s)", "dd_write", "loopback", "higher", 0.5),
    ("8. dd read 1 GiB, cold (MiB/s)", "dd_read", "loopback", "higher", 0.5),
]


def make_tree(root: Path, keys: int) -> None:
    """N files of 64 bytes in 100 directories, written natively (the cp -r source)."""
    for i in range(keys):
        directory = root / f"d{i % 100:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"k{i:05d}").write_text(VALUE + "\n")


def shell_create(root: Path, keys: int) -> None:
    """Workload 1: one shell creating every key with echo > file."""
    script = (
        f"i=0; while [ $i -lt 100 ]; do mkdir d$i; i=$((i+1)); done; "
        f"i=0; while [ $i -lt {keys} ]; do echo {VALUE} > d$((i % 100))/k$i; i=$((i+1)); done"
    )
    root.mkdir(parents=True)
    sh(script, cwd=root)


def run_target(target: Target, scratch: Path, keys: int, rounds: int, mib: int) -> dict[str, Any]:
    """Every file workload on one target; returns {workload: median seconds or MiB/s}."""
    out: dict[str, Any] = {}
    base = target.root / "bench"
    base.mkdir()
    out["create"] = median_time(lambda n: shell_create(base / f"create{n}", keys), rounds)
    tree = base / "create0"

    def cold(_: int) -> None:
        drop_caches()

    out["cold_cat"] = median_time(lambda _: sh("cat d*/* > /dev/null", cwd=tree), rounds, cold)
    out["cold_grep"] = median_time(
        lambda _: subprocess.run(["grep", "-rq", "needle", str(tree)], check=False), rounds, cold
    )
    out["cold_ls"] = median_time(lambda _: sh("ls -lR > /dev/null", cwd=tree), rounds, cold)
    quarters = " & ".join(f"cat d{q}*/* > /dev/null" for q in range(4))
    out["parallel_cat"] = median_time(lambda _: sh(f"{quarters}; wait", cwd=tree), rounds, cold)
    sh("cat d*/* > /dev/null", cwd=tree)  # warm the cache once
    out["warm_cat"] = median_time(lambda _: sh("cat d*/* > /dev/null", cwd=tree), rounds)
    source = scratch / "cp-source"

    def copy(n: int) -> None:
        sh(f"cp -r {source} {base}/cp{n} && diff -r {source} {base}/cp{n}")

    out["cp_r"] = median_time(copy, rounds)
    big, dest = scratch / "dd-source.bin", target.root / "big.bin"
    target.reset_peak_rss()
    write = median_time(lambda _: sh(f"dd if={big} of={dest} bs=1M status=none"), rounds)
    read = median_time(lambda _: sh(f"dd if={dest} of=/dev/null bs=1M status=none"), rounds, cold)
    out["dd_write"], out["dd_read"] = mib / write, mib / read
    peak = target.peak_rss_kib()
    out["peak_rss_mib"] = None if peak is None else peak / 1024
    dest.unlink()
    return out


def cold_start(scratch: Path, rounds: int) -> dict[str, float]:
    """Workload 9: `kyfs get KEY` as a new process against the import floor.

    Measured as an installed kyfs runs: with its modules' bytecode cached (pip compiles
    an installed package; the untimed first run writes __pycache__ for this editable
    checkout), so PYTHONDONTWRITEBYTECODE is taken out of the environment. With it set,
    as on these machines, every start also compiles kyfs's own modules (about 30 ms);
    ``kyfs_get_compiling_s`` is that figure.
    """
    env = {**os.environ, "KYFS_HOME": str(scratch / "cold-home")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for command in (["use", "bench", "--create"], ["set", "k", "v"]):
        subprocess.run([sys.executable, "-m", "kyfs", *command], env=env, check=True,
                       capture_output=True)  # fmt: skip

    def timed(command: list[str]) -> float:
        times = []
        for n in range(rounds * 4 + 1):
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            if n:
                times.append(time.perf_counter() - started)
        return statistics.median(times)

    for cached in Path(kyfs.__file__).parent.rglob("__pycache__"):
        shutil.rmtree(cached)
    compiling = timed([sys.executable, "-B", "-m", "kyfs", "get", "k"])  # writes no bytecode
    floor = timed([sys.executable, "-c", "import sqlite3, click, platformdirs"])
    get = timed([sys.executable, "-m", "kyfs", "get", "k"])
    script = Path(sys.executable).with_name("kyfs")
    console = timed([str(script), "get", "k"]) if script.exists() else get
    return {"import_floor_s": floor, "kyfs_get_s": get, "kyfs_script_get_s": console,
            "kyfs_get_compiling_s": compiling}  # fmt: skip


WRITER = r"""
import sys, time
from kyfs.engine.sqlite.engine import SqliteEngine
workspace, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
w = SqliteEngine()
s = w.open(workspace)
for i in range(count):
    s.set(f"{prefix}/{i}", b"v" * 64)
"""


def two_writers(scratch: Path, writes: int) -> dict[str, float]:
    """Workload 10: throughput of two writer processes (the CLI's code path) on two
    workspaces against two on one workspace."""
    env = {**os.environ, "KYFS_HOME": str(scratch / "writers-home")}
    for name in ("one", "two"):
        subprocess.run([sys.executable, "-m", "kyfs", "create", name], env=env, check=True,
                       capture_output=True)  # fmt: skip

    def throughput(targets: list[str], tag: str) -> float:
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, name, f"{tag}{n}", str(writes)], env=env
            )
            for n, name in enumerate(targets)
        ]
        for proc in procs:
            proc.wait()
        return 2 * writes / (time.perf_counter() - started)

    same = statistics.median(throughput(["one", "one"], f"s{r}") for r in range(3))
    apart = statistics.median(throughput(["one", "two"], f"a{r}") for r in range(3))
    return {"writes_per_s_one_workspace": same, "writes_per_s_two_workspaces": apart}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller and fewer rounds (< 2 min)")
    parser.add_argument("--no-search", action="store_true", help="skip workload 11")
    parser.add_argument("--only-trees", action="store_true", help="workloads 12 to 17 only")
    parser.add_argument(
        "--only-storage", action="store_true", help="the storage section (18 to 23) only"
    )
    parser.add_argument("--no-storage", action="store_true", help="skip workloads 18 to 23")
    parser.add_argument(
        "--only-snapshots", action="store_true", help="workload 24 (snapshots, forks) only"
    )
    args = parser.parse_args()
    keys, rounds, mib = (2000, 2, 64) if args.quick else (10_000, 5, 1024)
    started = time.time()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_before": load_average(),
        "keys": keys,
        "rounds": rounds,
        "dd_mib": mib,
        "caches_dropped": drop_caches(),
    }
    if args.only_snapshots or not (args.only_trees or args.only_storage):
        with workdir() as scratch:
            results.update(snapshots.run(scratch, args.quick))
    if args.only_snapshots:  # workload 24 alone
        args.only_storage = args.no_storage = args.no_search = True
    if not args.only_storage:
        with workdir() as scratch:
            results.update(real_trees.run_all(scratch, args.quick, rounds if args.quick else 3))
    if not (args.no_storage or args.only_trees):
        from bench.harness import postgres_server

        with workdir() as scratch:
            if args.quick:  # SQLite only
                results.update(storage.run_all(scratch))
            else:
                with postgres_server() as url:
                    results.update(storage.run_all(scratch, url))
    if not (args.only_trees or args.only_storage):
        with workdir() as scratch:
            make_tree(scratch / "cp-source", keys)
            sh(f"dd if=/dev/urandom of={scratch / 'dd-source.bin'} bs=1M count={mib} status=none")
            for make_target in TARGETS:
                with make_target(scratch) as target:
                    for key, value in run_target(target, scratch, keys, rounds, mib).items():
                        results[f"{key}.{target.name}"] = value
            results.update(cold_start(scratch, rounds))
            results.update(two_writers(scratch, 500 if args.quick else 2000))
    if not (args.no_search or args.only_trees or args.only_storage):
        with workdir() as scratch:
            results.update(search_bench.run(scratch, args.quick))
    results["load_after"] = load_average()
    results["seconds"] = time.time() - started
    report(results)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"bench-{results['when'].replace(':', '')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}")


def report(results: dict[str, Any]) -> None:
    """Print the table: medians, ratios against the baseline, and whether the target holds."""
    print(
        f"kyfs bench: {results['keys']} keys of 64 bytes, {results['rounds']} rounds (medians), "
        f"dd {results['dd_mib']} MiB, {results['cpus']} CPUs; load before/after "
        f"{results['load_before'][0]:.2f}/{results['load_after'][0]:.2f}; "
        f"caches dropped: {results['caches_dropped']}"
    )
    head = f"{'workload':<32}{'native':>10}{'loopback':>10}{'kyfs':>10}{'kyfs/base':>11}  target"
    print(head)
    if "tree_files" in results:
        real_trees.report(results)
    storage.report(results)
    snapshots.report(results)
    if "create.kyfs" not in results:  # --only-trees, --only-storage
        print(f"total bench time: {results['seconds']:.0f} s")
        return
    for label, key, baseline, better, target in TARGETS_TABLE:
        values = [results[f"{key}.{t}"] for t in ("native", "loopback", "kyfs")]
        ratio = results[f"{key}.kyfs"] / results[f"{key}.{baseline}"]
        if target is None:
            verdict = ""
        else:
            met = ratio <= target if better == "lower" else ratio >= target
            sign = "<=" if better == "lower" else ">="
            verdict = f"{sign} {target}x {baseline}: {'met' if met else 'MISSED'}"
        cells = "".join(f"{v:>10.3f}" for v in values)
        print(f"{label:<32}{cells}{ratio:>10.2f}x  {verdict}")
    rss = results["peak_rss_mib.kyfs"]
    loop_rss = results["peak_rss_mib.loopback"]
    print(f"{'8. daemon peak RSS (MiB)':<32}{'':>10}{loop_rss:>10.1f}{rss:>10.1f}"
          f"{'':>11}  <= 100 MiB: {'met' if rss <= 100 else 'MISSED'}")  # fmt: skip
    floor, get = results["import_floor_s"], results["kyfs_script_get_s"]
    print(f"9. kyfs get cold start: {get * 1000:.0f} ms vs import floor {floor * 1000:.0f} ms "
          f"= {get / floor:.2f}x (target <= 1.2x: {'met' if get / floor <= 1.2 else 'MISSED'});"
          f" via python -m kyfs {results['kyfs_get_s'] * 1000:.0f} ms; compiling kyfs's"
          f" modules at each start {results['kyfs_get_compiling_s'] * 1000:.0f} ms")  # fmt: skip
    one, two = results["writes_per_s_one_workspace"], results["writes_per_s_two_workspaces"]
    verdict = "met" if two / one >= 1.6 else "MISSED"
    print(f"10. two writers: {two:.0f} writes/s on two workspaces vs {one:.0f} on one = "
          f"{two / one:.2f}x (target >= 1.6x: {verdict})")  # fmt: skip
    if "search.keys" in results:
        search_bench.report(results)
    print(f"total bench time: {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
