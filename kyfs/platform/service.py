"""Running the daemon under systemd: the user unit, readiness notification, logging.

* :func:`render_unit` makes the ``Type=notify`` user unit (systemd.service(5)):
  the daemon sends ``READY=1`` on ``$NOTIFY_SOCKET`` only once its mount answers
  a ``stat``; ``ExecStop`` runs ``kyfs unmount``, which waits for the daemon to
  exit; ``Restart=on-failure``. ``systemd/kyfs.service`` in the repository is
  this function's output for ``/usr/local/bin/kyfs`` and ``%h/kyfs``.
* :func:`notify` implements sd_notify(3)'s datagram protocol: one datagram of
  ``KEY=VALUE`` lines to the AF_UNIX socket named by ``NOTIFY_SOCKET`` (a
  leading ``@`` is the abstract namespace). It is a dozen lines, so kyfs does not
  depend on systemd-python, which needs libsystemd headers and a C compiler.
* :func:`setup_logging`: under systemd (``INVOCATION_ID`` set) to stderr, which
  the journal records; otherwise to a rotating file (kyfs.platform.paths.log_file()),
  and to stderr as well in the foreground.

Thread-safety: ``announce_when_mounted`` runs in its own thread; the rest is
called once, from the main thread.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

from kyfs.platform import paths

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0  # seconds to wait for the mount to answer before giving up on READY=1

UNIT = """\
# kyfs: key-value workspaces mounted as a filesystem (a systemd user unit).
# Install with `kyfs service install`, which fills in the paths, then:
#   systemctl --user daemon-reload && systemctl --user enable --now kyfs
[Unit]
Description=kyfs: key-value workspaces mounted at {mountpoint}
Documentation=man:fusermount3(1)

[Service]
Type=notify
NotifyAccess=main
{environment}ExecStart={kyfs} mount --foreground {mountpoint}
ExecStop={kyfs} unmount {mountpoint}
Restart=on-failure
RestartSec=2
TimeoutStopSec=30

[Install]
WantedBy=default.target
"""


def kyfs_command() -> str:
    """The absolute command line that runs kyfs: the ``kyfs`` script next to this
    Python, else on PATH, else ``<python> -m kyfs``."""
    beside = Path(sys.executable).with_name("kyfs")
    if beside.is_file():
        return str(beside)
    found = shutil.which("kyfs")
    return str(Path(found).absolute()) if found else f"{sys.executable} -m kyfs"


# The data location a command runs with; the service is given the same (kyfs.platform.paths).
LOCATION_VARIABLES = ("KYFS_HOME", "KYFS_DATA", "KYFS_USER")


def _quoted(text: str) -> str:
    """``text`` as one systemd unit value: double-quoted, backslash and quote escaped,
    ``%`` doubled (systemd.unit(5): quoting; systemd.unit(5): specifiers)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def render_unit(kyfs: str, mountpoint: str, environment: dict[str, str] | None = None) -> str:
    """The unit text for the command ``kyfs`` and ``mountpoint`` (absolute, or %h-based),
    with ``Environment=`` lines for ``environment`` (systemd.exec(5))."""
    lines = "".join(
        f"Environment={_quoted(f'{name}={value}')}\n"
        for name, value in sorted((environment or {}).items())
    )
    return UNIT.format(kyfs=kyfs, mountpoint=mountpoint, environment=lines)


def install(mountpoint: Path | None = None) -> Path:
    """Write the user unit with this installation's paths and this command's data
    location (KYFS_HOME, a cursor's KYFS_DATA, KYFS_USER, when set), so the service
    serves the data the user installed it for; return where it was written."""
    target = paths.systemd_user_unit()
    target.parent.mkdir(parents=True, exist_ok=True)
    where = str((mountpoint or paths.default_mountpoint()).expanduser().absolute())
    environment = {n: os.environ[n] for n in LOCATION_VARIABLES if os.environ.get(n)}
    target.write_text(render_unit(kyfs_command(), where, environment))
    return target


def uninstall() -> Path | None:
    """Remove the user unit; return where it was, or None when it was not installed."""
    target = paths.systemd_user_unit()
    if not target.exists():
        return None
    target.unlink()
    return target


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


def announce_when_mounted(mountpoint: Path, timeout: float = READY_TIMEOUT) -> threading.Thread:
    """Start a thread that sends READY=1 once ``mountpoint`` is mounted and answers stat."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.path.ismount(mountpoint):
                    os.stat(mountpoint)  # answered by the FUSE loop: the mount works
                    notify(f"READY=1\nSTATUS=serving {mountpoint}\nMAINPID={os.getpid()}")
                    log.info("mounted at %s", mountpoint)
                    return
            except OSError:
                pass
            time.sleep(0.05)
        log.error("the mount at %s did not answer within %.0f s", mountpoint, timeout)

    thread = threading.Thread(target=watch, name="kyfs-ready", daemon=True)
    thread.start()
    return thread


def log_file() -> Path | None:
    """Where :func:`setup_logging` sends the daemon's log lines: the rotating file
    (kyfs.platform.paths.log_file()), or None under systemd (the journal:
    ``journalctl --user -u kyfs``)."""
    return None if os.environ.get("INVOCATION_ID") else paths.log_file()


def setup_logging(verbosity: int, foreground: bool) -> None:
    """Configure the daemon's logging: WARNING, INFO with -v, DEBUG with -vv or --debug."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    root = logging.getLogger()
    root.setLevel(level)
    target = log_file()
    if target is None:  # under systemd: the journal adds time and unit
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        return
    paths.make_private_dir(target.parent)
    rotating = logging.handlers.RotatingFileHandler(target, maxBytes=1 << 20, backupCount=3)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    rotating.setFormatter(formatter)
    root.addHandler(rotating)
    if foreground:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)


def purge(keep: bool = True) -> Path | None:
    """Remove the data, config and state directories; with ``keep`` first archive them
    to ``~/kyfs-data-<UTC time>.tar.gz`` and return that path.

    Raises:
        MountError: (exit 5) a kyfs daemon is still running: unmount first.
    """
    import datetime as dt
    import json
    import tarfile

    from kyfs.core.errors import MountError

    records = paths.state_dir() / "mounts"
    for record in records.glob("*.json") if records.is_dir() else []:
        try:
            pid = json.loads(record.read_text()).get("pid")
            if isinstance(pid, int):
                os.kill(pid, 0)
                raise MountError(f"a kyfs daemon (pid {pid}) is running: kyfs unmount first")
        except (ValueError, ProcessLookupError, OSError):
            continue
    places = list(dict.fromkeys((paths.data_dir(), paths.config_dir(), paths.state_dir())))
    archive = None
    if keep:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        archive = paths.purge_archive_file(stamp)
        with tarfile.open(archive, "w:gz") as tar:
            for place in places:
                if place.exists():
                    tar.add(place, arcname=place.name if len(places) > 1 else "kyfs")
        archive.chmod(0o600)
    for place in places:
        shutil.rmtree(place, ignore_errors=True)
    return archive
