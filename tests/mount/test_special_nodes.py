"""FIFOs, UNIX sockets and device nodes through a real mount (issue 28 item 3): a reader
and a writer meet in a FIFO, a server binds a socket in a workspace and a client
connects, device nodes are made with their numbers and never open (the mount is nodev),
and rsync and tar carry all of them into the mount and back."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mount, stop_mount

pytestmark = pytest.mark.mount

MEGABYTE = 1_000_000

SERVER = """
import os, socket, sys
os.chdir(sys.argv[1])
with socket.socket(socket.AF_UNIX) as server:
    server.bind("server.sock")
    server.listen(1)
    print("listening", flush=True)
    conn, _ = server.accept()
    with conn:
        got = b""
        while len(got) < {size}:
            piece = conn.recv(65536)
            if not piece:
                break
            got += piece
        conn.sendall(got[::-1])
"""


def _types(root: Path) -> dict[str, tuple[str, int, int]]:
    """Relative path -> (type letter of ls -l, permission bits, st_rdev), under ``root``."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(root))] = (
            stat.filemode(st.st_mode)[0],
            stat.S_IMODE(st.st_mode),
            st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0,
        )
    return found


def test_a_fifo_carries_a_megabyte_from_a_writer_to_a_reader(
    mounted: Mount, tmp_path: Path
) -> None:
    workspace = mounted.path / "default"
    fifo = workspace / "pipe"
    os.mkfifo(fifo, 0o600)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    data = os.urandom(MEGABYTE)
    received = tmp_path / "received"
    with received.open("wb") as out:
        reader = subprocess.Popen(["cat", str(fifo)], stdout=out)
    writer = subprocess.run(["sh", "-c", 'cat > "$1"', "sh", fifo], input=data, timeout=30)
    assert reader.wait(timeout=30) == 0 and writer.returncode == 0
    assert received.read_bytes() == data
    assert fifo.lstat().st_size == 0  # nothing of it was stored
    old = os.umask(0o077)  # the daemon applies the umask (the mount asks FUSE_CAP_DONT_MASK)
    try:
        os.mkfifo(workspace / "private", 0o755)
        os.mknod(workspace / "sock", 0o755 | stat.S_IFSOCK)
    finally:
        os.umask(old)
    assert stat.S_IMODE((workspace / "private").lstat().st_mode) == 0o700
    assert stat.S_IMODE((workspace / "sock").lstat().st_mode) == 0o700


def test_a_unix_socket_server_and_client_exchange_a_megabyte(mounted: Mount) -> None:
    workspace = mounted.path / "default"
    script = SERVER.format(size=MEGABYTE)
    server = subprocess.Popen(
        [sys.executable, "-c", script, str(workspace)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"
        assert stat.S_ISSOCK((workspace / "server.sock").lstat().st_mode)
        data = os.urandom(MEGABYTE)
        client = subprocess.run(
            [sys.executable, "-c", (
                "import os, socket, sys\n"
                "os.chdir(sys.argv[1])\n"
                "c = socket.socket(socket.AF_UNIX); c.connect('server.sock')\n"
                "c.sendall(sys.stdin.buffer.read()); c.shutdown(socket.SHUT_WR)\n"
                "out = b''\n"
                "while piece := c.recv(65536): out += piece\n"
                "sys.stdout.buffer.write(out)\n"
            ), str(workspace)],
            input=data, capture_output=True, timeout=60,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr
        assert client.stdout == data[::-1]
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
        server.communicate()  # closes its stdout


@pytest.mark.usefixtures("both_engines")
def test_device_nodes_keep_their_numbers_and_never_open(
    mount_factory: Callable[..., Mount],
) -> None:
    mount = mount_factory()
    workspace = mount.path / "default"
    subprocess.run(["mknod", "-m", "666", str(workspace / "null"), "c", "1", "3"], check=True)
    os.mknod(workspace / "disk", 0o640 | stat.S_IFBLK, os.makedev(259, 65537))
    os.mknod(workspace / "plain", 0o600 | stat.S_IFREG)  # mknod(2) of a regular file
    os.link(workspace / "null", workspace / "null2")
    made = _types(workspace)
    assert made == {
        "disk": ("b", 0o640, os.makedev(259, 65537)),
        "null": ("c", 0o666, os.makedev(1, 3)),
        "null2": ("c", 0o666, os.makedev(1, 3)),
        "plain": ("-", 0o600, 0),
    }
    assert (workspace / "null").stat().st_nlink == 2
    for device in ("null", "disk"):
        with pytest.raises(PermissionError) as caught:
            (workspace / device).read_bytes()
        assert caught.value.errno == errno.EACCES  # nodev: the kernel refuses
    refused = mount.kyfs("get", "null")
    assert refused.returncode == 2 and b"character device holds no value" in refused.stderr
    stop_mount(mount)
    again = mount_factory()
    assert _types(again.path / "default") == made


def test_rsync_and_tar_carry_special_nodes_in_and_out(mounted: Mount, tmp_path: Path) -> None:
    source = tmp_path / "native"
    (source / "run").mkdir(parents=True)
    os.mkfifo(source / "run" / "fifo", 0o640)
    os.mknod(source / "run" / "tty", 0o620 | stat.S_IFCHR, os.makedev(4, 1))
    (source / "run" / "file").write_bytes(b"plain")
    expected = _types(source)
    inside = mounted.path / "default" / "tree"
    subprocess.run(
        ["rsync", "-aH", "--specials", "--devices", f"{source}/", f"{inside}/"], check=True
    )
    assert _types(inside) == expected
    back = tmp_path / "back"
    subprocess.run(
        ["rsync", "-aH", "--specials", "--devices", f"{inside}/", f"{back}/"], check=True
    )
    assert _types(back) == expected
    archive = tmp_path / "tree.tar"
    subprocess.run(["tar", "-C", str(inside), "-cf", str(archive), "."], check=True)
    untarred = mounted.path / "default" / "untarred"
    untarred.mkdir()
    subprocess.run(["tar", "-C", str(untarred), "-xf", str(archive)], check=True)
    assert _types(untarred) == expected
    subprocess.run(["rm", "-r", str(inside)], check=True)
    assert not inside.exists()
