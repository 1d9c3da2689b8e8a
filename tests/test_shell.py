"""kyfs shell through a pseudo-terminal (pexpect): commands without the prefix, use
switching live in the bottom bar and the prompt, completion, history, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from kyfs.cli.shell import candidates

CPR = r"\x1b\[6n"  # prompt_toolkit asks the terminal where the cursor is
# Terminal control sequences prompt_toolkit may put inside a word it redraws (after a
# completion it may redraw the whole line or only the part that was added).
CONTROL = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"


class Terminal:
    """A pexpect child behind a terminal that answers cursor position requests (CPR),
    as a real one does: prompt_toolkit shows its bottom bar only once it knows the
    terminal's height."""

    def __init__(self, kyfs_home: Path) -> None:
        env = {**os.environ, "KYFS_HOME": str(kyfs_home), "TERM": "xterm", "NO_COLOR": "1"}
        self.child = pexpect.spawn(sys.executable, ["-m", "kyfs", "shell"], env=env,
                                   timeout=30, dimensions=(40, 120))  # fmt: skip

    def expect(self, pattern: object) -> None:
        """Wait for ``pattern``, answering every CPR on the way."""
        while self.child.expect([CPR, pattern]) == 0:
            self.child.send("\x1b[1;1R")

    def __getattr__(self, name: str) -> object:
        return getattr(self.child, name)


def spawn(kyfs_home: Path) -> Terminal:
    child = Terminal(kyfs_home)
    child.expect("kyfs:default>")
    return child


def kyfs(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kyfs", *args], capture_output=True, timeout=60)


def test_the_shell_runs_commands_and_switches_live(kyfs_home: Path) -> None:
    child = spawn(kyfs_home)
    try:
        child.expect(r"\[Workspace: default\]")  # the bottom bar
        child.expect("mount: down")
        child.sendline("set user.name Alice")
        child.expect("kyfs:default>")
        child.sendline("get user.name")
        child.expect("Alice")
        child.expect("kyfs:default>")
        child.sendline("use project_alpha --create")
        child.expect("active workspace: project_alpha")
        child.expect("kyfs:project_alpha>")
        child.expect(r"\[Workspace: project_alpha\]")
        child.sendline("set token 's3cr3t value'")
        child.expect("kyfs:project_alpha>")
        child.sendline("get missing.key")
        child.expect("key not found")
        child.expect(r"\[exit 1\]")
        child.sendline("keys")
        child.expect("token")
        child.sendline("exit")
        child.child.expect(pexpect.EOF)
    finally:
        child.child.close(force=True)
    assert child.child.exitstatus == 0
    assert (
        json.loads(kyfs("get", "token", "-w", "project_alpha", "--json").stdout)["value"]
        == "s3cr3t value"
    )
    listed = json.loads(kyfs("workspaces", "--json").stdout)
    assert [w["name"] for w in listed if w["active"]] == ["project_alpha"]
    assert "set user.name Alice" in (kyfs_home / "state" / "shell_history").read_text()


def test_the_shell_completes_and_survives_ctrl_c(kyfs_home: Path) -> None:
    assert kyfs("set", "user.name", "Alice").returncode == 0
    child = spawn(kyfs_home)
    try:
        child.send("wor\t")  # a command
        child.expect(f"wor{CONTROL}kspaces")
        child.sendline("")
        child.expect("shared")
        child.expect("kyfs:default>")
        child.send("get user.\t")  # a key
        child.expect(f"user\\.{CONTROL}name")
        child.sendline("")
        child.expect("Alice")
        child.expect("kyfs:default>")
        child.send("half a line")
        child.expect("half a line")
        child.sendintr()  # Ctrl-C drops the line, the shell stays
        child.expect("kyfs:default>")
        child.sendline("get user.name")  # not "half a lineget user.name"
        child.expect("Alice")
        # Ctrl-D once the next prompt is drawn (in raw mode: sent between two prompts,
        # the terminal's cooked mode took it, as CI met once)
        child.expect("kyfs:default>")
        child.sendeof()
        child.child.expect(pexpect.EOF)
    finally:
        child.child.close(force=True)
    assert child.child.exitstatus == 0


@pytest.mark.parametrize(
    ("line", "expected"),
    [("se", {"search", "set", "service"}), ("use ", {"default", "shared"}),
     ("keys -w sh", {"shared"}), ("backup v", {"verify"}), ("get user", {"user.name"})],
)  # fmt: skip
def test_completion_candidates(kyfs_home: Path, line: str, expected: set[str]) -> None:
    assert kyfs("set", "user.name", "Alice").returncode == 0
    found, _ = candidates(line)
    assert expected <= set(found)
