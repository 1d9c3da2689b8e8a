"""Compare-and-swap (issue 29 item 5) with real processes, on both engines: counters
incremented by concurrent read-modify-write loops that retry on VersionConflict lose no
increment; and the CLI's flags, exit code 7 and the version it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import kyfs
from kyfs.core.errors import EXIT_VERSION_CONFLICT

# One process: N read-modify-write increments of the counter, each retried at once
# until its compare-and-swap wins; prints how many retries it took.
INCREMENTER = """
import sys
import time
import kyfs
from kyfs.core.errors import VersionConflict

rounds = int(sys.argv[1])
start = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
retries = 0
with kyfs.open("default") as ws:
    while time.time() < start:  # every process begins at once, its imports done
        time.sleep(0.001)
    for _ in range(rounds):
        while True:
            value, version = ws.get_versioned("counter")
            try:
                ws.set("counter", str(int(value) + 1), if_version=version)
                break
            except VersionConflict:
                retries += 1
print(retries)
"""

PROCESSES = int(os.environ.get("KYFS_CAS_PROCESSES", "4"))  # the figure: 8
ROUNDS = int(os.environ.get("KYFS_CAS_ROUNDS", "100"))  # the figure: 500


def _run_counter(processes: int, rounds: int) -> tuple[int, int, float]:
    """(final counter, retries in all, seconds) of ``processes`` incrementers."""
    with kyfs.open("default", create=True) as ws:
        ws.set("counter", "0", if_absent=True)
    started = time.monotonic()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", INCREMENTER, str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    retries = 0
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err.decode()
        retries += int(out)
    elapsed = time.monotonic() - started
    with kyfs.open("default") as ws:
        return int(ws.get("counter")), retries, elapsed


@pytest.mark.usefixtures("both_engines")
def test_concurrent_increments_lose_nothing(both_engines: str) -> None:
    final, retries, elapsed = _run_counter(PROCESSES, ROUNDS)
    print(f"{both_engines}: {PROCESSES}x{ROUNDS}: {final} in {elapsed:.1f} s, {retries} retries")
    assert final == PROCESSES * ROUNDS
    assert retries > 0  # they did race: the check is what kept every increment


@pytest.mark.usefixtures("both_engines")
def test_blind_increments_do_lose_updates() -> None:
    """The counter test can fail: the same loop without the version check loses
    increments (last writer wins)."""
    blind = INCREMENTER.replace(", if_version=version", "")
    with kyfs.open("default", create=True) as ws:
        ws.set("counter", "0")
    start = str(time.time() + 3.0)  # after every process's start-up, on a loaded machine too
    workers = [
        subprocess.Popen([sys.executable, "-c", blind, "200", start], stdout=subprocess.DEVNULL)
        for _ in range(4)
    ]
    for worker in workers:
        assert worker.wait(timeout=300) == 0
    with kyfs.open("default") as ws:
        assert int(ws.get("counter")) < 800


def _kyfs(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "kyfs", *args], input=stdin, capture_output=True, check=False
    )


def test_cli_compare_and_swap() -> None:
    made = _kyfs("set", "c", "0", "--if-absent", "--json")
    assert made.returncode == 0, made.stderr
    version = json.loads(made.stdout)["version"]
    assert _kyfs("get", "c", "--version").stdout.decode().strip() == str(version)
    again = _kyfs("set", "c", "9", "--if-absent")
    assert again.returncode == EXIT_VERSION_CONFLICT
    assert again.stderr.decode().startswith("Error: c exists")
    moved = _kyfs("set", "c", "1", "--if-version", str(version), "--json")
    assert moved.returncode == 0, moved.stderr
    newer = json.loads(moved.stdout)["version"]
    assert newer > version
    stale = _kyfs("set", "c", "2", "--if-version", str(version))
    assert stale.returncode == EXIT_VERSION_CONFLICT
    assert b"not " + str(version).encode() in stale.stderr
    shown = json.loads(_kyfs("get", "c", "--json").stdout)
    assert (shown["value"], shown["version"]) == ("1", newer)
    listed = json.loads(_kyfs("history", "c", "--json").stdout)
    assert listed[-1]["version"] == newer  # the version history shows is the one to give
    piped = _kyfs("set", "c", "--if-version", str(newer), stdin=b"from stdin")
    assert piped.returncode == 0, piped.stderr
    assert _kyfs("get", "c").stdout == b"from stdin"
    both = _kyfs("set", "c", "x", "--if-version", "1", "--if-absent")
    assert both.returncode == 2 and b"not both" in both.stderr
    negative = _kyfs("set", "c", "x", "--if-version", "-1")
    assert negative.returncode == 2 and b"Traceback" not in negative.stderr
    assert _kyfs("delete", "c").returncode == 0
    gone = _kyfs("set", "c", "x", "--if-version", str(newer))
    assert gone.returncode == EXIT_VERSION_CONFLICT and b"gone" in gone.stderr
    assert _kyfs("get", "c", "--version").returncode == 1
