"""The daemon embeds in the background (issue 30 item 1): once a workspace keeps
embeddings, files written through the mount get theirs from the daemon's indexer
without any search running, and a semantic search then finds them. On both engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.conftest import Mount

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("both_engines")]


def _kyfs(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kyfs", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_daemon_embeds_what_the_mount_writes(mount_factory: Callable[..., Mount]) -> None:
    _kyfs("use", "notes", "--create")
    _kyfs("set", "start", "a first note")
    _kyfs("search", "--semantic", "first")  # the workspace keeps embeddings from now on
    mount = mount_factory()
    folder = mount.path / "notes" / "team"
    folder.mkdir()
    notes = {
        "pager": "The pager rotation changes every Monday at ten in the morning.",
        "lunch": "Pizza arrives on Fridays at noon in the kitchen.",
        "deploy": "Staging deploys go through make release with ENV set to staging.",
    }
    for name, text in notes.items():
        (folder / name).write_text(text)
    deadline = time.monotonic() + 60
    while True:  # no search runs meanwhile: only the daemon embeds
        status = json.loads(_kyfs("embeddings", "status", "-w", "notes", "--json"))
        if status["pending"] == 0:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    found = json.loads(
        _kyfs(
            "search",
            "--semantic",
            "-w",
            "notes",
            "--json",
            "--limit",
            "1",
            "pager rotation on Mondays",
        )
    )
    assert found["key"] == "team/pager"
