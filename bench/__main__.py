"""``make bench`` / ``python -m bench [--quick]``: kyfs against a native directory, same run.

Workloads:

* cp -r: a tree of >= 1,000 files from the installed standard library copied in,
  then ``diff -r`` against the source (ratio kyfs / native, median of rounds).
* dd: a file written and read back with dd (throughput ratio kyfs / native),
  and the kyfs daemon's peak RSS while doing it.

Prints a table and writes JSON to bench/results/. Nothing here is a test: the
figures are read by people, never asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sysconfig
import time
from pathlib import Path
from typing import Any

from bench import search_bench
from bench.harness import drop_caches, kyfs_mount, load_average, median_time, native, sh, workdir

PACKAGES = ["email", "json", "unittest", "asyncio", "xml", "encodings"]


def tree_sources() -> tuple[Path, list[Path], int]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [stdlib / p for p in PACKAGES if (stdlib / p).is_dir()]
    files = sum(1 for s in sources for p in s.rglob("*") if p.is_file())
    return stdlib, sources, files


def bench_cp_r(target_root: Path, sources: list[Path], rounds: int) -> float:
    dest = target_root / "tree"

    def clean() -> None:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()

    def run() -> None:
        sh(f"cp -r {' '.join(map(str, sources))} {dest}/")
        for source in sources:
            sh(f"diff -r {source} {dest / source.name}")

    seconds = median_time(run, rounds, before=clean)
    shutil.rmtree(dest, ignore_errors=True)
    return seconds


def bench_dd(target, scratch: Path, mib: int, rounds: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    source = scratch / "dd-source.bin"
    if not source.exists():
        sh(f"dd if=/dev/urandom of={source} bs=1M count={mib} status=none")
    dest = target.root / "big.bin"
    target.reset_peak_rss()
    write = median_time(lambda: sh(f"dd if={source} of={dest} bs=1M status=none"), rounds)
    read = median_time(
        lambda: sh(f"dd if={dest} of=/dev/null bs=1M status=none"), rounds, before=drop_caches
    )
    dest.unlink()
    peak = target.peak_rss_kib()
    return {
        "write_mib_s": mib / write,
        "read_mib_s": mib / read,
        "peak_rss_mib": (peak / 1024) if peak is not None else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller file (< 2 min)")
    args = parser.parse_args()
    rounds = 2 if args.quick else 5
    mib = 64 if args.quick else 1024
    _, sources, files = tree_sources()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.platform(),
        "load_before": load_average(),
        "rounds": rounds,
        "caches_dropped": drop_caches(),
        "tree_files": files,
        "dd_mib": mib,
    }
    with workdir() as scratch:
        for make_target in (native, kyfs_mount):
            with make_target(scratch) as target:
                results[f"cp_r_s.{target.name}"] = bench_cp_r(target.root, sources, rounds)
                for key, value in bench_dd(target, scratch, mib, rounds).items():
                    results[f"dd.{key}.{target.name}"] = value
    with workdir() as scratch:
        results.update(search_bench.run(scratch, args.quick))
    results["load_after"] = load_average()

    rows = [
        ("cp -r + diff -r (s)", "cp_r_s", "lower"),
        ("dd write (MiB/s)", "dd.write_mib_s", "higher"),
        ("dd read, cold (MiB/s)", "dd.read_mib_s", "higher"),
    ]
    print(f"tree: {files} files; dd file: {mib} MiB; rounds: {rounds} (medians)")
    print(f"load average before/after: {results['load_before']} / {results['load_after']}")
    print(f"{'workload':<26}{'native':>12}{'kyfs':>12}{'kyfs/native':>14}")
    for label, key, _better in rows:
        base, ours = results[f"{key}.native"], results[f"{key}.kyfs"]
        print(f"{label:<26}{base:>12.3f}{ours:>12.3f}{ours / base:>13.2f}x")
    print(f"{'kyfs daemon peak RSS (MiB)':<26}{'':>12}{results['dd.peak_rss_mib.kyfs']:>12.1f}")
    search_bench.report(results)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"bench-{results['when'].replace(':', '')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
