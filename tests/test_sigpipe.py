"""Every command's output into a pipe that closes early (issue 28 item 7): ``kyfs ... |
head -1`` ends as ``seq 1000000 | head -1`` does, with status 141 (128 + SIGPIPE) under
``set -o pipefail`` and nothing on stderr (it printed "Error: Broken pipe", exit 4).
Real ``kyfs`` processes, on the SQLite engine."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Mount

KEYS = 8000  # x ~100-byte names: every listing is far more than a pipe's 64 KiB
VERSIONS = 4000
ENOUGH = 200 * 1024  # bytes: more than the pipe holds and head reads, so a write fails


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KYFS_HOME whose ``default`` workspace holds many long keys (half of them in the
    archive), many versions of one key and a 4 MiB value, made in-process once."""
    from kyfs.engine import open_engine

    home = tmp_path_factory.mktemp("sigpipe-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KYFS_HOME", str(home))
        env.delenv("KYFS_ENGINE", raising=False)
        engine = open_engine()
        try:
            if not engine.exists("default"):
                engine.create("default")
            with engine.using("default") as workspace:
                stem = "notes/" + "long-key-name-" * 6
                for i in range(KEYS):
                    workspace.set(f"{stem}{i:05}", f"token alpha line {i}\nmore\n".encode())
                for i in range(KEYS // 2):
                    workspace.delete(f"{stem}{i:05}")  # into the archive
                for i in range(VERSIONS):
                    workspace.set("busy", f"version {i} of a key with a long history".encode())
                workspace.set("big", b"0123456789abcdef\n" * (4 << 16))
        finally:
            engine.close()
    return home


COMMANDS = [
    "keys",
    "keys --json",
    "scan",
    "get big",
    "history busy",
    "archive",
    "search alpha --limit 4000",
    "export",
    "export --format json",
]


def _run(home: Path, shell: str) -> subprocess.CompletedProcess[bytes]:
    """``shell`` under bash with pipefail; ``kyfs`` in it is this Python's."""
    kyfs = f"{shlex.quote(sys.executable)} -m kyfs"
    return subprocess.run(
        ["bash", "-c", "set -o pipefail; " + shell.replace("kyfs", kyfs, 1)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "KYFS_HOME": str(home)},
    )


def test_seq_is_the_model() -> None:
    done = subprocess.run(
        ["bash", "-c", "set -o pipefail; seq 1000000 | head -1"], capture_output=True
    )
    assert (done.returncode, done.stderr) == (141, b"")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_into_a_closed_pipe_exits_quietly_with_141(filled: Path, command: str) -> None:
    whole = _run(filled, f"kyfs {command}")
    assert whole.returncode == 0 and len(whole.stdout) > ENOUGH, whole.stderr
    done = _run(filled, f"kyfs {command} | head -c 1 >/dev/null")
    assert (done.returncode, done.stderr.decode(errors="replace")) == (141, "")


def test_head_1_of_keys_prints_the_first_key(filled: Path) -> None:
    done = _run(filled, "kyfs keys | head -1")
    assert done.stdout.startswith(b"big\n") and done.stderr == b""
    assert done.returncode == 141


@pytest.mark.mount
def test_the_daemon_keeps_ignoring_sigpipe(mounted: Mount) -> None:
    """A reader gone is one request's EPIPE in the daemon, never its end."""
    status = Path(f"/proc/{mounted.process.pid}/status").read_text()
    ignored = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
    assert int(ignored.split()[1], 16) & (1 << (signal.SIGPIPE - 1))
    assert (mounted.path / "default").is_dir()


def test_a_command_run_off_the_main_thread_still_runs(kyfs_home: Path) -> None:
    """Python lets only the main thread set a signal handler: a command invoked from
    another thread (an embedding program's worker) runs with SIGPIPE as it finds it
    (it failed with ValueError when the handler was set)."""
    import threading

    from click.testing import CliRunner

    from kyfs.cli import cli

    results = []
    worker = threading.Thread(
        target=lambda: results.append(CliRunner().invoke(cli, ["workspaces"]))
    )
    worker.start()
    worker.join()
    assert results[0].exit_code == 0, results[0].exception
    assert "shared" in results[0].output
