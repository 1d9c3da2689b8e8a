"""Commands that run or watch the daemon: mount, unmount, status, stats, service,
uninstall, completion. The FUSE binding is imported only by ``kyfs mount``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from kyfs.app import (
    ENV_DB_PATH,
    engine_session,
)
from kyfs.cli.base import (
    _echo_json,
    cli,
    json_option,
)
from kyfs.core.errors import InvalidInput, WorkspaceNotFound
from kyfs.platform import config, paths

# --- mounting ---------------------------------------------------------------------------
STATUS_MOUNTED, STATUS_STALE, STATUS_DOWN = 0, 1, 3  # LSB init-script status codes


def _exit(code: int) -> None:
    if code:
        raise SystemExit(code)


@cli.command()
@click.argument("mountpoint", required=False, type=click.Path(path_type=Path))
@click.option("--foreground", "-f", is_flag=True, help="Serve in this process until unmounted.")
@click.option("-o", "options", metavar="OPTIONS", help="Mount options, e.g. -o allow_other.")
@click.option("-v", "--verbose", count=True, help="Log more: -v info, -vv debug.")
@click.option("--debug", is_flag=True, help="Log every operation (same as -vv).")
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), help="Serve metrics on 127.0.0.1:PORT."
)
@click.option(
    "--xattr/--no-xattr",
    default=True,
    help="Serve extended attributes, stored and user.kyfs.* (--no-xattr: faster ls -l"
    " and first writes; setfattr fails).",
)
@click.option("--user", "user", metavar="NAME", help="Show identity NAME's workspaces.")
@click.pass_context
def mount(
    ctx: click.Context,
    mountpoint: Path | None,
    foreground: bool,
    options: str | None,
    verbose: int,
    debug: bool,
    metrics_port: int | None,
    xattr: bool,
    user: str | None,
) -> None:
    """Mount the workspaces at MOUNTPOINT (default ~/kyfs), in the background.

    Creates the `default` workspace when there is none besides `shared`. A stale mountpoint
    (daemon gone) is recovered first.

    With --user NAME (as `kyfs --user NAME mount`) the mount shows what identity NAME
    sees: its own workspaces, `shared`, and those shared with it as OWNER~NAME.

    With `kyfs -w NAME mount` the mount shows workspace NAME alone (at MOUNTPOINT/NAME);
    other workspaces are not there, and none is created, renamed or dropped through it.
    `kyfs --db FILE mount` is refused (exit 2): a mount serves the data directory.

    Examples: kyfs mount; kyfs mount /mnt/kv -o allow_other --metrics-port 9464;
    kyfs mount ~/kv-agent1 --user agent1; kyfs -w project_alpha mount ~/alpha
    """
    from click.core import ParameterSource

    from kyfs.fuse import daemon as mounting

    if user is not None:  # the daemon inherits it
        os.environ[config.ENV_USER] = user
        config.current_user()  # a bad name is a clear error here
    if os.environ.get(ENV_DB_PATH):
        raise InvalidInput(
            "--db FILE cannot be mounted: a mount serves the data directory; copy the file"
            " in with kyfs backup restore or kyfs migrate, or read it with kyfs --db FILE"
        )
    root = ctx.find_root()
    only = None
    if root.get_parameter_source("workspace") == ParameterSource.COMMANDLINE:
        only = root.params["workspace"]  # kyfs -w NAME mount: that workspace alone

    target = (mountpoint or paths.default_mountpoint()).expanduser().absolute()
    with engine_session() as workspaces:
        if only is not None:
            if not workspaces.exists(only):
                raise WorkspaceNotFound(f"workspace not found: {only}")
            os.environ[config.ENV_MOUNT_WORKSPACE] = only  # the daemon inherits it
        elif not [n for n in workspaces.names() if n != config.SHARED_WORKSPACE]:
            workspaces.create(config.DEFAULT_WORKSPACE)
    verbosity = 2 if debug else verbose
    if foreground:
        from kyfs.platform import service

        service.setup_logging(verbosity, foreground=True)
        mounting.serve(target, mounting.parse_options(options), metrics_port, xattr)
        return
    pid = mounting.mount(target, options, verbosity, metrics_port, xattr)
    click.echo(f"kyfs mounted at {target} (daemon pid {pid}); unmount with: kyfs unmount {target}")


@cli.command()
@click.argument("mountpoint", required=False, type=click.Path(path_type=Path))
@click.option("--lazy", "-z", is_flag=True, help="Detach now even if files are open (umount -l).")
def unmount(mountpoint: Path | None, lazy: bool) -> None:
    """Unmount MOUNTPOINT and wait for the daemon to exit; without MOUNTPOINT, every
    mount a daemon of this data directory serves (kyfs records them), or ~/kyfs.

    Examples: kyfs unmount; kyfs unmount /mnt/kv --lazy
    """
    from kyfs.fuse import daemon as mounting

    for target in _targets(mountpoint):
        mounting.unmount(target, lazy=lazy)
        click.echo(f"unmounted {target}")


def _targets(mountpoint: Path | None) -> list[Path]:
    """MOUNTPOINT; without it the mounts of this data directory's daemons, else ~/kyfs."""
    from kyfs.fuse import daemon as mounting

    if mountpoint is not None:
        return [mountpoint.expanduser().absolute()]
    return mounting.running_mounts() or [paths.default_mountpoint().expanduser().absolute()]


@cli.command()
@click.argument("mountpoint", required=False, type=click.Path(path_type=Path))
@json_option
def status(mountpoint: Path | None, as_json: bool) -> None:
    """Is kyfs mounted at MOUNTPOINT? Daemon, data, active workspace, log file. Without
    MOUNTPOINT: every mount a daemon of this data directory serves, else ~/kyfs.

    Exit status as an LSB init script's status action (and systemctl is-active) gives
    it, so scripts can test it: 0 mounted, 1 stale (the daemon died; kyfs mount
    recovers it), 3 not mounted. With several mounts: 1 when one is stale.

    Examples: kyfs status || kyfs mount; kyfs status /mnt/kv --json
    """
    from kyfs.fuse import daemon as mounting

    infos = [mounting.status(target) for target in _targets(mountpoint)]
    codes = [
        STATUS_STALE if i["stale"] else STATUS_MOUNTED if i["mounted"] else STATUS_DOWN
        for i in infos
    ]
    code = STATUS_STALE if STATUS_STALE in codes else min(codes)
    click.get_current_context().call_on_close(lambda: _exit(code))
    if as_json:  # one mount: its object; several: a list of them
        _echo_json(infos[0] if len(infos) == 1 else infos)
        return
    for number, info in enumerate(infos):
        if number:
            click.echo()
        _show_status(info)


def _show_status(info: dict[str, object]) -> None:
    state = (
        "stale (the daemon is gone; kyfs mount recovers it)"
        if info["stale"]
        else ("mounted" if info["mounted"] else "not mounted")
    )
    click.echo(f"{info['mountpoint']}: {state}")
    if info["pid"]:
        click.echo(f"daemon: pid {info['pid']}, up {info['uptime_s']} s")
    click.echo(f"data: {info['data_dir']} ({info['workspaces']} workspaces)")
    click.echo(f"active workspace: {info['active_workspace']} (user {info['user']})")
    click.echo(f"version: {info['version']}")
    log = info["log_file"] or "the systemd journal (journalctl --user -u kyfs)"
    click.echo(f"log: {log}")


@cli.command()
@click.argument("mountpoint", required=False, type=click.Path(path_type=Path))
@json_option
def stats(mountpoint: Path | None, as_json: bool) -> None:
    """The mount's operation counts, errors, bytes and latencies (from .kyfs/metrics);
    without MOUNTPOINT, the first mount of this data directory's daemons, else ~/kyfs.

    Examples: kyfs stats; kyfs stats /mnt/kv --json
    """
    from kyfs.core.errors import MountError
    from kyfs.platform import metrics as metrics_mod

    target = _targets(mountpoint)[0]
    try:
        text = (target / ".kyfs" / "metrics").read_text()
    except OSError as exc:
        raise MountError(f"no kyfs mount answers at {target}: {exc.strerror}") from None
    data = metrics_mod.parse(text)
    if as_json:
        _echo_json(data)
        return
    click.echo(f"{'operation':<12}{'calls':>10}{'mean ms':>10}")
    for op, count in sorted(data["operations"].items(), key=lambda kv: -kv[1]):
        latency = data["latency_seconds"].get(op, {})
        mean = 1000 * latency.get("sum", 0.0) / max(latency.get("count", 1), 1)
        click.echo(f"{op:<12}{count:>10}{mean:>10.3f}")
    for label, count in sorted(data["errors"].items()):
        click.echo(f"error {label}: {count}")
    click.echo(f"read {data['read_bytes']} bytes, written {data['written_bytes']} bytes")


@cli.group()
def service() -> None:
    """The systemd user unit that keeps kyfs mounted.

    Examples: kyfs service install; kyfs service uninstall
    """


@service.command(name="install")
@click.option("--mountpoint", type=click.Path(path_type=Path), help="Default ~/kyfs.")
def service_install(mountpoint: Path | None) -> None:
    """Write the kyfs user unit with this installation's paths.

    Examples: kyfs service install; kyfs --cursor work service install --mountpoint ~/kv-work
    """
    from kyfs.platform import service as services

    target = services.install(mountpoint)
    click.echo(f"wrote {target}")
    click.echo(
        "enable it with: systemctl --user daemon-reload && systemctl --user enable --now kyfs"
    )


@service.command(name="uninstall")
def service_uninstall() -> None:
    """Remove the kyfs user unit (stop it first: systemctl --user disable --now kyfs).

    Examples: kyfs service uninstall
    """
    from kyfs.platform import service as services

    removed = services.uninstall()
    click.echo(f"removed {removed}" if removed else "no kyfs unit was installed")


@cli.command()
@click.option("--purge", is_flag=True, help="Also remove every workspace and the config.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-keep", is_flag=True, help="With --purge --yes: no archive of the data first.")
def uninstall(purge: bool, yes: bool, no_keep: bool) -> None:
    """Remove the systemd unit; with --purge also the data (archived first).

    Examples: kyfs uninstall; kyfs uninstall --purge --yes
    """
    from kyfs.platform import service as services

    removed = services.uninstall()
    click.echo(f"removed {removed}" if removed else "no kyfs unit was installed")
    if not purge:
        return
    if not yes:
        click.confirm(f"Remove every workspace in {paths.data_dir()} and the config?", abort=True)
    archive = services.purge(keep=not (yes and no_keep))
    if archive is not None:
        click.echo(f"archived the data to {archive}")
    click.echo("removed the data and the config")


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(kyfs completion bash)".

    Examples: kyfs completion bash >> ~/.bashrc; kyfs completion zsh
    """
    from click.shell_completion import get_completion_class

    complete_class = get_completion_class(shell)
    assert complete_class is not None
    click.echo(complete_class(cli, {}, "kyfs", "_KYFS_COMPLETE").source())
