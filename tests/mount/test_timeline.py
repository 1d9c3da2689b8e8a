"""The timeline through a real mount (issue 29 item 3): ``kyfs log`` shows every one of
1,000 mixed changes, made by CLI commands and by programs writing through the mount,
each once, with its source, and for the mount the writing process's pid and command
name (``sh``'s own, ``cp``'s, ``rm``'s). Both engines (tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kyfs.cli import cli
from tests.conftest import Mount

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("both_engines")]

# 1,000 changes in all. Most come through the mount: a kyfs command (in-process here)
# costs 30-60 ms on PostgreSQL, where it connects to the server three times, a file
# written through the mount a few ms.
SH_WRITES = 550  # files written by one sh (echo > FILE)
CP_WRITES = 150  # files written by one cp
RM_DELETES = 100  # of those, deleted by one rm
CLI_SETS = 150  # kyfs set
CLI_DELETES = 50  # kyfs delete


def _cli(*args: str) -> None:
    done = CliRunner().invoke(cli, list(args))
    assert done.exit_code == 0, done.output


def _log(mount: Mount, *args: str) -> list[dict[str, Any]]:
    done = mount.kyfs("log", "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def test_log_shows_every_change_with_its_source(mounted: Mount, tmp_path: Path) -> None:
    root = mounted.path / "default"
    for directory in ("sh", "cp"):
        (root / directory).mkdir()
    script = f'echo $$; for i in $(seq 1 {SH_WRITES}); do echo "value $i" > sh/k$i; done'
    sh = subprocess.run(["sh", "-c", script], cwd=root, capture_output=True, check=True)
    sh_pid = int(sh.stdout.split()[0])
    sources = tmp_path / "src"
    sources.mkdir()
    for i in range(CP_WRITES):
        (sources / f"c{i}").write_text(f"copied {i}\n")
    cp = subprocess.Popen(["cp", *sorted(str(p) for p in sources.iterdir()), str(root / "cp")])
    assert cp.wait(timeout=60) == 0
    for i in range(CLI_SETS):
        _cli("set", f"cli/k{i}", f"cli value {i}")
    rm = subprocess.Popen(["rm", *(str(root / "sh" / f"k{i}") for i in range(1, RM_DELETES + 1))])
    assert rm.wait(timeout=60) == 0
    for i in range(CLI_DELETES):
        _cli("delete", f"cli/k{i}")

    changes = [c for c in _log(mounted) if c["action"] in ("set", "delete")]
    made = Counter((c["source"], c["action"], c["comm"]) for c in changes)
    assert made == {
        ("mount", "set", "sh"): SH_WRITES,
        ("mount", "set", "cp"): CP_WRITES,
        ("mount", "delete", "rm"): RM_DELETES,
        ("cli", "set", None): CLI_SETS,
        ("cli", "delete", None): CLI_DELETES,
    }, made
    assert len(changes) == 1000
    by_comm = {c["comm"]: {x["pid"] for x in changes if x["comm"] == c["comm"]} for c in changes}
    assert by_comm["sh"] == {sh_pid} and by_comm["cp"] == {cp.pid} and by_comm["rm"] == {rm.pid}
    assert all(c["user"] for c in changes)
    keys = Counter(c["key"] for c in changes if c["action"] == "set")
    assert all(n == 1 for n in keys.values())  # each write once
    assert [c["key"] for c in _log(mounted, "--key", "cp/")] == [
        f"cp/c{i}" for i in sorted(range(CP_WRITES), key=lambda i: f"c{i}")
    ]
    assert _log(mounted, "--since", "1h") == _log(mounted)
    assert _log(mounted, "--since", "2200-01-01") == []
    late = mounted.kyfs("log", "--since", "2999-01-01")
    assert late.returncode == 2 and b"out of range" in late.stderr
