"""A throwaway PostgreSQL cluster: ``initdb`` into a temporary directory, a server that
listens on a Unix socket in that directory only (no TCP port), and its removal.

For the tests, ``make bench`` and anyone who wants to try the PostgreSQL engine without a
server of their own. Debian's ``postgresql`` package provides the binaries
(/usr/lib/postgresql/<version>/bin); :func:`binaries` finds them. PostgreSQL refuses to
run as root (postgres(1)), so as root the cluster runs as the unprivileged user
``nobody``, which owns its directory; the socket directory is world-writable and
sticky, as /tmp.

Authentication is ``trust`` for local socket connections: nothing but the socket, in a
directory made for this cluster, reaches the server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from kyfs.core.errors import StorageError

START_TIMEOUT_S = 30.0  # seconds pg_ctl waits for the server to accept connections
SUPERUSER = "kyfs"  # the cluster's superuser, and the database kyfs uses in it


def binaries() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres (the newest Debian version
    first, then PATH), or None when PostgreSQL's server is not installed."""
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if (p / "bin" / "initdb").exists()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
            reverse=True,
        )
        if versions:
            return versions[0] / "bin"
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    return None


class Cluster:
    """One throwaway cluster; ``url`` is the libpq connection URL of its database.

    Args:
        durable: False (tests) turns fsync and full-page writes off: fast, and lost in a
            power cut, which a throwaway cluster does not mind; True keeps PostgreSQL's
            defaults (the bench, which compares durable engines).

    Raises:
        StorageError: (EIO, exit 4) the binaries are missing or the server did not start.
    """

    def __init__(self, durable: bool = False) -> None:
        found = binaries()
        if found is None:
            raise StorageError("PostgreSQL's server is not installed (Debian package postgresql)")
        self.bin = found
        self.dir = Path(tempfile.mkdtemp(prefix="kyfs-pg-"))
        self.data = self.dir / "data"
        self.socket_dir = self.dir
        self._user = "nobody" if os.geteuid() == 0 else None
        self._durable = durable
        self.url = f"postgresql://{SUPERUSER}@/{SUPERUSER}?host={self.socket_dir}"
        self._started = False

    def start(self) -> Cluster:
        """initdb, start the server, make the database; returns self."""
        try:
            os.chmod(self.dir, 0o1777)
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")  # fmt: skip
            self.start_server()
            self._run("createdb", "-h", str(self.socket_dir), "-U", SUPERUSER, SUPERUSER)
        except BaseException:
            self.stop()
            raise
        return self

    def stop_server(self) -> None:
        """Stop the server (fast shutdown: clients are cut off) and keep its data, as a
        server going away; :meth:`start_server` brings it back."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._started = False

    def start_server(self) -> None:
        """Start the stopped server again on the same data and socket."""
        options = [
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{self.socket_dir}'",
            "-c max_connections=200",
        ]
        if not self._durable:
            options += ["-c fsync=off", "-c full_page_writes=off"]
        log = str(self.dir / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", str(int(START_TIMEOUT_S)),
                  "-l", log, "-o", " ".join(options), "start")  # fmt: skip
        self._started = True

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory; safe to call twice."""
        if self._started:
            self._started = False
            # As the server's own user: pg_ctl refuses to run as root.
            subprocess.run(
                self._command("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"),
                capture_output=True,
                check=False,
                user=self._user,
                cwd=self.dir,
                timeout=START_TIMEOUT_S * 2,
            )
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        """The server's log so far (for a failing test's report)."""
        try:
            return (self.dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _command(self, program: str, *args: str) -> list[str]:
        return [str(self.bin / program), *args]

    def _run(self, program: str, *args: str) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        done = subprocess.run(
            self._command(program, *args),
            capture_output=True,
            check=False,
            user=self._user,
            cwd=self.dir,
            timeout=START_TIMEOUT_S * 2,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise StorageError(f"{program} failed ({done.returncode}): {output}\n{self.log()}")
