"""Running kyfs like a daemon: the systemd unit, readiness, status, logs, metrics, completion."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from kyfs.cli import cli
from kyfs.fuse.daemon import read_record
from kyfs.platform import metrics, paths, service
from tests.conftest import Mount, require_mount

ROOT = Path(__file__).resolve().parent.parent


def test_repository_unit_is_the_rendered_unit() -> None:
    text = (ROOT / "systemd" / "kyfs.service").read_text()
    assert text == service.render_unit("/usr/local/bin/kyfs", "%h/kyfs")
    assert "Type=notify" in text and "Restart=on-failure" in text
    assert "ExecStop=/usr/local/bin/kyfs unmount %h/kyfs" in text


def test_service_install_fills_in_paths_and_systemd_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = CliRunner().invoke(cli, ["service", "install", "--mountpoint", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    unit = tmp_path / "xdg" / "systemd" / "user" / "kyfs.service"
    text = unit.read_text()
    command = service.kyfs_command()
    assert f"ExecStart={command} mount --foreground {tmp_path / 'm'}" in text
    assert Path(command.split()[0]).is_absolute()
    # the service serves the data directory it was installed from (KYFS_HOME here)
    assert f'Environment="KYFS_HOME={os.environ["KYFS_HOME"]}"' in text
    if shutil.which("systemd-analyze"):
        done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
        assert "kyfs.service" not in done.stderr.decode(), done.stderr.decode()
    assert CliRunner().invoke(cli, ["service", "uninstall"]).exit_code == 0
    assert not unit.exists()


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    sock.bind(address)
    sock.settimeout(0.3)
    return sock, address


def test_ready_is_not_sent_before_the_mount_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = _notify_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    (tmp_path / "not-mounted").mkdir()
    service.announce_when_mounted(tmp_path / "not-mounted", timeout=0.5).join()
    with pytest.raises(TimeoutError):
        sock.recv(1024)
    sock.close()


@pytest.mark.mount
def test_ready_is_sent_once_mounted(tmp_path: Path, kyfs_home: Path) -> None:
    require_mount()
    sock, address = _notify_socket(tmp_path)
    sock.settimeout(15)
    mountpoint = tmp_path / "mnt"
    process = subprocess.Popen(
        [sys.executable, "-m", "kyfs", "mount", "--foreground", str(mountpoint)],
        env={**os.environ, "NOTIFY_SOCKET": address},
    )
    try:
        message = sock.recv(1024).decode()
        assert os.path.ismount(mountpoint)  # by the time READY arrives the mount answers
        assert sorted(os.listdir(mountpoint)) == ["default", "shared"]
        assert "READY=1" in message.splitlines()
        assert f"MAINPID={process.pid}" in message
    finally:
        sock.close()
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
        process.wait(timeout=30)
    assert process.returncode == 0


@pytest.mark.mount
def test_status_stats_unmount_find_the_daemons_of_this_data(
    tmp_path: Path, kyfs_home: Path
) -> None:
    require_mount()
    first, second = tmp_path / "one", tmp_path / "two"

    def kyfs(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "kyfs", *args], capture_output=True)

    try:
        assert kyfs("status").returncode == 3  # nothing runs: ~/kyfs, not mounted
        assert kyfs("mount", str(first)).returncode == 0
        assert kyfs("mount", str(second)).returncode == 0
        done = kyfs("status", "--json")
        assert done.returncode == 0
        assert sorted(i["mountpoint"] for i in json.loads(done.stdout)) == [str(first), str(second)]
        assert b"mounted" in kyfs("status").stdout
        (first / "default" / "k").write_text("v")
        stats = json.loads(kyfs("stats", "--json").stdout)
        assert stats["operations"]  # the first mount's counters
        # another data directory sees none of them
        other = subprocess.run([sys.executable, "-m", "kyfs", "status", "--json"],
                               capture_output=True, env={**os.environ,
                               "KYFS_HOME": str(tmp_path / "other")})  # fmt: skip
        assert other.returncode == 3 and json.loads(other.stdout)["mounted"] is False
        done = kyfs("unmount")
        assert done.returncode == 0, done.stderr
        assert not os.path.ismount(first) and not os.path.ismount(second)
        assert kyfs("status").returncode == 3
    finally:
        for mountpoint in (first, second):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)


@pytest.mark.mount
def test_status_of_running_stale_and_absent_mounts(tmp_path: Path, kyfs_home: Path) -> None:
    require_mount()
    mountpoint = tmp_path / "mnt"

    codes = []

    def status() -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "kyfs", "status", str(mountpoint), "--json"],
            capture_output=True,
        )
        info = json.loads(done.stdout)
        codes.append((done.returncode, info["mounted"], info["stale"]))
        return info  # type: ignore[no-any-return]

    try:
        assert status()["mounted"] is False
        subprocess.run([sys.executable, "-m", "kyfs", "mount", str(mountpoint)], check=True)
        running = status()
        pid = read_record(mountpoint)["pid"]  # type: ignore[index]
        assert running["mounted"] is True and running["stale"] is False
        assert running["pid"] == pid and running["workspaces"] == 2
        assert running["active_workspace"] == "default" and running["version"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not status()["stale"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stale = status()
        assert stale["stale"] is True and stale["mounted"] is False and stale["pid"] is None
        text = subprocess.run(
            [sys.executable, "-m", "kyfs", "status", str(mountpoint)], capture_output=True
        ).stdout
        assert b"stale" in text
        # LSB init-script status codes: 0 mounted, 1 stale, 3 not mounted
        for code, mounted, is_stale in codes:
            assert code == (0 if mounted else 1 if is_stale else 3)
        assert {code for code, _, _ in codes} == {0, 1, 3}
    finally:
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)


@pytest.mark.mount
def test_metrics_count_operations_through_the_mount(mounted: Mount) -> None:
    ws = mounted.path / "default"
    for i in range(5):
        (ws / f"k{i}").write_bytes(b"x" * 1000)
    for i in range(5):
        assert (ws / f"k{i}").read_bytes() == b"x" * 1000
    with pytest.raises(FileNotFoundError):
        (ws / "absent").read_bytes()
    assert ".kyfs" not in os.listdir(mounted.path)
    data = metrics.parse((mounted.path / ".kyfs" / "metrics").read_text())
    assert data["operations"]["create"] >= 5
    assert data["operations"]["write"] >= 5 and data["written_bytes"] >= 5000
    assert data["read_bytes"] >= 5000
    assert data["errors"].get("getattr ENOENT", 0) >= 1
    assert data["latency_seconds"]["create"]["count"] == data["operations"]["create"]
    stats = subprocess.run(
        [sys.executable, "-m", "kyfs", "stats", str(mounted.path), "--json"],
        env=mounted.env(),
        capture_output=True,
        check=True,
    )
    assert json.loads(stats.stdout)["operations"]["create"] >= 5
    with pytest.raises(OSError):
        (mounted.path / ".kyfs" / "metrics").write_text("no")


@pytest.mark.mount
def test_metrics_over_http(tmp_path: Path, kyfs_home: Path) -> None:
    require_mount()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mountpoint = tmp_path / "mnt"
    command = ["mount", "--foreground", str(mountpoint), "--metrics-port", str(port)]
    process = subprocess.Popen([sys.executable, "-m", "kyfs", *command])
    try:
        deadline = time.monotonic() + 15
        while not os.path.ismount(mountpoint) and time.monotonic() < deadline:
            time.sleep(0.05)
        (mountpoint / "default" / "k").write_text("v")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            body = answer.read().decode()
        assert 'kyfs_operations_total{operation="create"}' in body
        assert "kyfs_operation_seconds_bucket" in body
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
        process.wait(timeout=30)


@pytest.mark.mount
def test_daemon_logs_to_a_rotating_file(tmp_path: Path, kyfs_home: Path) -> None:
    require_mount()
    mountpoint = tmp_path / "mnt"
    done = subprocess.run(
        [sys.executable, "-m", "kyfs", "mount", "-v", str(mountpoint)], capture_output=True
    )
    assert done.returncode == 0, done.stderr
    subprocess.run([sys.executable, "-m", "kyfs", "unmount", str(mountpoint)], check=True)
    text = paths.log_file().read_text()
    assert "serving" in text and "INFO" in text


def test_completion_scripts_and_names() -> None:
    runner = CliRunner()
    for shell in ("bash", "zsh", "fish"):
        result = runner.invoke(cli, ["completion", shell])
        assert result.exit_code == 0 and "_KYFS_COMPLETE" in result.output
    runner.invoke(cli, ["create", "alpha"])
    runner.invoke(cli, ["create", "beta"])
    runner.invoke(cli, ["set", "-w", "alpha", "user.name", "x"])
    runner.invoke(cli, ["set", "-w", "alpha", "token", "x"])

    def complete(words: str) -> list[str]:
        current = len(words.split()) - (0 if words.endswith(" ") else 1)
        env = {**os.environ, "_KYFS_COMPLETE": "bash_complete"}
        env.update(COMP_WORDS=words, COMP_CWORD=str(current))
        done = subprocess.run([sys.executable, "-m", "kyfs"], env=env, capture_output=True)
        return [line.split(",", 1)[1] for line in done.stdout.decode().splitlines()]

    assert complete("kyfs use al") == ["alpha"]
    assert complete("kyfs get -w alpha us") == ["user.name"]
    assert sorted(complete("kyfs drop ")) == ["alpha", "beta", "shared"]


def test_uninstall_purge_archives_then_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kyfs_home: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    runner = CliRunner()
    runner.invoke(cli, ["use", "w", "--create"])
    runner.invoke(cli, ["set", "k", "precious"])
    assert runner.invoke(cli, ["uninstall", "--purge"], input="n\n").exit_code == 1
    assert paths.workspace_file("w").exists()
    result = runner.invoke(cli, ["uninstall", "--purge", "--yes"])
    assert result.exit_code == 0, result.output
    assert not kyfs_home.exists()
    [archive] = list((tmp_path / "home").glob("kyfs-data-*.tar.gz"))
    import tarfile

    with tarfile.open(archive) as tar:
        assert any(name.endswith("workspaces/w.db") for name in tar.getnames())


def test_a_big_write_reaches_the_workspace_file_while_the_daemon_runs(mounted: Mount) -> None:
    """The daemon's commits leave the WAL alone (no request waits for a checkpoint), yet
    a big write reaches the workspace file while the daemon runs, once the mount is idle
    (folded by its Checkpointer, or by the indexer's connection, which checkpoints at
    its own commits; tests/test_search.py tests the Checkpointer alone)."""
    value = os.urandom(24 << 20)
    (mounted.path / "default" / "big.bin").write_bytes(value)
    database = mounted.home / "workspaces" / "default.db"
    deadline = time.monotonic() + 10
    while database.stat().st_size < len(value) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert database.stat().st_size >= len(value)
    assert (mounted.path / "default" / "big.bin").read_bytes() == value


def test_metrics_from_many_threads_add_up_exactly() -> None:
    """Each thread counts into its own shard; a snapshot sums them, even while they count."""
    import threading

    from kyfs.platform.metrics import Metrics

    metrics = Metrics()
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for n in range(5_000):
            metrics.record("getattr", 3e-5)
            metrics.record("create", 2e-4, error=17)
            metrics.add_bytes(read=3, written=5)
            if n % 1000 == 0:
                metrics.snapshot()  # a reader meanwhile

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = metrics.snapshot()
    assert snap["calls"] == {"getattr": 40_000, "create": 40_000}
    assert snap["errors"] == {("create", "EEXIST"): 40_000}
    assert (snap["read"], snap["written"]) == (120_000, 200_000)
    assert snap["histograms"]["getattr"][0][-1] == 40_000
    assert abs(snap["histograms"]["create"][1] - 40_000 * 2e-4) < 1e-6
