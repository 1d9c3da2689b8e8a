"""kyfs.platform.processes: the command name of a pid, cached per pid for COMM_TTL_S
seconds (a reused pid is read again after that), and kept for a process gone."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from kyfs.platform import processes


def test_command_name_of_a_process_and_after_it_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = subprocess.Popen(["sleep", "30"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/comm").read_text() != "sleep\n":  # forked, not exec'd
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert processes.command_name(child.pid) == "sleep"
    finally:
        child.kill()
        child.wait()
    monkeypatch.setattr(processes, "COMM_TTL_S", 0.0)  # read again: gone, the last name
    assert processes.command_name(child.pid) == "sleep"
    assert processes.command_name(0) is None and processes.command_name(-1) is None
    assert processes.command_name(2**22 + 12345) is None  # above pid_max: never seen


def test_a_reused_pid_is_read_again_after_the_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    pid = os.getpid()
    real = Path(f"/proc/{pid}/comm").read_text().strip()
    processes._comms[pid] = ("stale", time.monotonic())  # as if another process had it
    assert processes.command_name(pid) == "stale"  # trusted within COMM_TTL_S
    monkeypatch.setattr(processes, "COMM_TTL_S", 0.0)
    assert processes.command_name(pid) == real


def test_user_name() -> None:
    assert processes.user_name(0) == "root"
    assert processes.user_name(2**31 - 7) == str(2**31 - 7)  # no such user: the number
