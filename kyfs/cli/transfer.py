"""Data in and out: migrate (KyCLI, scoped files, ProntoDB), backup, export, import.
Everything these read is untrusted (kyfs.transfer)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from kyfs.app import (
    engine_session,
    require_main,
    session,
)
from kyfs.cli.base import (
    KyfsCliError,
    _echo_json,
    _progress,
    cli,
    json_option,
    workspace_option,
)
from kyfs.core.errors import InvalidInput, StorageError


# --- migration ------------------------------------------------------------------------------
def _master_key(env_var: str | None) -> str | None:
    if env_var is None:
        return None
    value = os.environ.get(env_var)
    if not value:
        raise InvalidInput(f"the environment variable {env_var} is not set")
    return value


def _show_plan(plan: Any, as_json: bool, report: Path | None = None) -> None:
    data = plan.as_dict()
    if report is not None:
        report.write_text(json.dumps(data, indent=2))
    if as_json:
        _echo_json(data)
        return
    click.echo(f"source: {plan.source}")
    click.echo(
        f"{'workspace':<24}{'keys':>8}{'bytes':>12}{'archived':>10}{'conflicts':>11}  exists"
    )
    for w in plan.workspaces:
        click.echo(
            f"{w.name:<24}{w.keys:>8}{w.bytes:>12}{w.archived:>10}{w.conflicts:>11}  "
            f"{'yes' if w.exists else 'no'}"
        )
    click.echo(f"total: {plan.keys} keys, {plan.bytes} bytes")
    for note in plan.notes:
        click.echo(f"note: {note}")


@cli.group()
def migrate() -> None:
    """Bring data in from KyCLI, KyCLI-style scoped files, ProntoDB, or another engine.

    Migrations write under the stored names of the whole data directory: only the main
    identity runs them (others: exit 6).

    Examples: kyfs migrate kycli; kyfs migrate run pronto.db --dry-run;
    kyfs migrate engine --from sqlite --to postgresql://kyfs@db/kyfs
    """
    require_main("a migration")


@migrate.command(name="kycli")
@click.argument("path", required=False, type=click.Path(path_type=Path, exists=True))
@click.option("--master-key-env", metavar="VAR", help="Environment variable with the master key.")
@click.option("--merge", type=click.Choice(["keep", "replace"]), help="Into existing workspaces.")
@click.option("--yes", "-y", is_flag=True, help="Import without asking.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def migrate_kycli(
    path: Path | None, master_key_env: str | None, merge: str | None, yes: bool, quiet: bool
) -> None:
    """Import KyCLI data (~/kydata.db into `default`, ~/.kycli/data/NAME.db into NAME).

    Examples: kyfs migrate kycli; kyfs migrate kycli ~/old/kydata.db --merge keep
    """
    from kyfs.transfer import migrate as migrating

    sources = migrating.kycli_sources(path)
    if not sources:
        raise InvalidInput("no KyCLI data found (~/kydata.db or ~/.kycli/data/*.db)")
    for source, name in sources:
        click.echo(f"{source} -> workspace {name}", err=True)
    if not yes:
        click.confirm("Import?", abort=True)
    with _progress(quiet, "importing", len(sources)) as bar:
        plan = migrating.run_kycli(
            sources, _master_key(master_key_env), merge, progress=lambda *_: bar.update(1)
        )
    click.echo(
        f"imported {plan.keys} keys ({plan.bytes} bytes) into {len(plan.workspaces)} workspaces"
    )
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)


def _read_source(source: Path, master_key_env: str | None) -> Any:
    from kyfs.transfer.sources import read_single_file

    return read_single_file(source, _master_key(master_key_env))


@migrate.command(name="engine")
@click.option(
    "--from", "source", required=True, metavar="URL", help="sqlite or a postgresql:// URL."
)
@click.option("--to", "target", required=True, metavar="URL", help="sqlite or a PostgreSQL URL.")
@click.option("-w", "--workspace", "names", multiple=True, metavar="NAME", help="Only NAME.")
@json_option
def migrate_engine(source: str, target: str, names: tuple[str, ...], as_json: bool) -> None:
    """Copy workspaces between engines, losslessly, and validate every copy (SHA-256 of
    every value; names, owners, links, times, TTLs, history, archive, settings). `sqlite`
    is this data directory's files. The source is only read; a workspace the target has
    already with other content is refused (exit 3), one with the same content (a run
    that was killed copied it) is skipped; exit 4 if a copy does not validate (it goes
    to the target's trash).

    Examples: kyfs migrate engine --from sqlite --to postgresql://kyfs@db/kyfs;
    kyfs migrate engine --from postgresql://kyfs@db/kyfs --to sqlite -w notes
    """
    from kyfs.transfer import migrate as migrating

    copies = migrating.migrate_engine(source, target, names)
    if as_json:
        _echo_json(
            [{"workspace": c.name, "ok": c.ok, "copied": c.copied, "rows": c.rows,
              "problems": c.problems} for c in copies]
        )  # fmt: skip
    else:
        for copy in copies:
            if not copy.copied:
                click.echo(f"{copy.name}: in --to already, equal; not copied again")
                continue
            rows = copy.rows
            state = "validated" if copy.ok else "NOT validated"
            click.echo(
                f"{copy.name}: {rows.get('nodes', 0)} nodes, {rows.get('blocks', 0)} blocks,"
                f" {rows.get('history', 0)} history rows, {rows.get('archive', 0)} archived;"
                f" {state}"
            )
            for problem in copy.problems:
                click.echo(f"  {problem}")
    if not all(c.ok for c in copies):
        raise KyfsCliError(StorageError("validation failed"))


@migrate.command(name="analyze")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--report", type=click.Path(path_type=Path), help="Also write the report as JSON.")
@click.option("--master-key-env", metavar="VAR", help="Environment variable with the master key.")
@json_option
def migrate_analyze(
    source: Path, report: Path | None, master_key_env: str | None, as_json: bool
) -> None:
    """Show what migrating SOURCE would do: keys, bytes, conflicts, invalid names.

    Examples: kyfs migrate analyze pronto.db; kyfs migrate analyze scoped.db --json
    """
    from kyfs.transfer import migrate as migrating

    _show_plan(
        migrating.analyze(_read_source(source, master_key_env), str(source)), as_json, report
    )


@migrate.command(name="run")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Show the plan; write nothing.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--merge",
    type=click.Choice(["keep", "replace"]),
    help="Write into existing workspaces: keep stored values, or replace them (archived).",
)
@click.option("--master-key-env", metavar="VAR", help="Environment variable with the master key.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def migrate_run(
    source: Path,
    dry_run: bool,
    concurrency: int,
    merge: str | None,
    master_key_env: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Migrate SOURCE into kyfs, workspaces in parallel.

    Examples: kyfs migrate run pronto.db --dry-run; kyfs migrate run scoped.db --merge keep
    """
    from kyfs.transfer import migrate as migrating

    data = _read_source(source, master_key_env)
    names = {r.workspace for r in data.live} | {r.workspace for r, _ in data.archived}
    with _progress(quiet or as_json or dry_run, "migrating", len(names)) as bar:
        plan = migrating.run(
            data, str(source), merge=merge, concurrency=concurrency, dry_run=dry_run,
            progress=lambda *_: bar.update(1),
        )  # fmt: skip
    if dry_run or as_json:
        _show_plan(plan, as_json)
        return
    click.echo(f"migrated {plan.keys} keys into {len(plan.workspaces)} workspaces")
    for note in plan.notes:
        click.echo(f"note: {note}")


@migrate.command(name="validate")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--master-key-env", metavar="VAR", help="Environment variable with the master key.")
@json_option
def migrate_validate(source: Path, master_key_env: str | None, as_json: bool) -> None:
    """Check that every key of SOURCE is in kyfs with an equal SHA-256; exit 4 if not.

    Examples: kyfs migrate validate pronto.db; kyfs migrate validate scoped.db --json
    """
    from kyfs.transfer import migrate as migrating

    result = migrating.validate(_read_source(source, master_key_env))
    if as_json:
        _echo_json(
            {"ok": result.ok, "keys": result.keys, "matched": result.matched,
             "missing": result.missing, "different": result.different}
        )  # fmt: skip
    else:
        click.echo(result.summary())
        for key in result.missing:
            click.echo(f"missing: {key}")
        for key in result.different:
            click.echo(f"different: {key}")
    if not result.ok:
        raise KyfsCliError(StorageError("validation failed"))


@migrate.command(name="cleanup")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--confirm", is_flag=True, help="Required: move SOURCE to the trash.")
@click.option("--master-key-env", metavar="VAR", help="Environment variable with the master key.")
def migrate_cleanup(source: Path, confirm: bool, master_key_env: str | None) -> None:
    """After a passing validate, move SOURCE into kyfs's trash (never deleted).

    Examples: kyfs migrate cleanup pronto.db --confirm
    """
    from kyfs.transfer import migrate as migrating

    if not confirm:
        raise InvalidInput("cleanup moves the source away: add --confirm")
    moved = migrating.cleanup([source], _read_source(source, master_key_env))
    for path in moved:
        click.echo(f"moved {source} to {path}")


# --- backup, export, import -----------------------------------------------------------------
@cli.group()
def backup() -> None:
    """Backups of workspaces: create, verify, restore.

    Examples: kyfs backup create; kyfs backup restore FILE -w notes --as notes_old
    """


@backup.command(name="create")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="The .tar.gz to write.")
@click.option("-w", "--workspace", "names", multiple=True, metavar="NAME", help="Only NAME.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def backup_create(output: Path | None, names: tuple[str, ...], quiet: bool, as_json: bool) -> None:
    """Write a .tar.gz of consistent workspace snapshots, the config and a manifest.

    Examples: kyfs backup create; kyfs backup create -o notes.tar.gz -w notes --json
    """
    from kyfs.transfer import backup as backups

    require_main("a backup")
    target = output or backups.default_backup_name()
    with engine_session() as workspaces:
        count = len(names) or len(workspaces.names())
    with _progress(quiet or as_json, "backing up", count) as bar:
        manifest = backups.create(target, list(names) or None, progress=lambda _: bar.update(1))
    if as_json:
        _echo_json({"file": str(target), **manifest})
        return
    workspaces_in = [f for f in manifest["files"] if "workspace" in f]
    keys = sum(f["keys"] for f in workspaces_in)
    click.echo(f"wrote {target}: {len(workspaces_in)} workspaces, {keys} keys")


@backup.command(name="verify")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@json_option
def backup_verify(file: Path, as_json: bool) -> None:
    """Check FILE against its manifest (checksums, sizes, key counts); exit 2 if not.

    Example: kyfs backup verify kyfs-backup-20261121T100000Z.tar.gz --json
    """
    from kyfs.platform import journal
    from kyfs.transfer import backup as backups

    with journal.begin("backup-verify") as op:  # its copies go when it ends, or after a kill
        checked = backups.verify(file, op.folder)
    files = checked.manifest["files"]
    if as_json:
        _echo_json(
            {
                "action": "verify",
                "file": str(file),
                "ok": True,
                "files": len(files),
                "workspaces": {f["workspace"]: f["keys"] for f in files if "workspace" in f},
            }
        )
        return  # fmt: skip
    click.echo(f"{file}: ok, {len(files)} files match the manifest")


@backup.command(name="restore")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-w", "--workspace", "name", metavar="NAME", help="Only workspace NAME.")
@click.option("--as", "as_name", metavar="NEW", help="Restore under the name NEW.")
@click.option("--force", is_flag=True, help="Replace existing workspaces (they go to the trash).")
@json_option
def backup_restore(
    file: Path, name: str | None, as_name: str | None, force: bool, as_json: bool
) -> None:
    """Restore workspaces from FILE, after verifying it.

    Examples: kyfs backup restore FILE; kyfs backup restore FILE -w notes --as notes_old
    """
    from kyfs.transfer import backup as backups

    require_main("a backup restore")
    restored = backups.restore(file, name, as_name, force)
    if as_json:
        _echo_json(
            {
                "action": "restore",
                "file": str(file),
                "workspaces": restored.workspaces,
                "state": restored.state,
            }
        )
        return  # fmt: skip
    click.echo("restored: " + ", ".join(restored.workspaces))
    if restored.state:
        click.echo("settings, state and cursors: " + ", ".join(restored.state))


@cli.command(name="export")
@workspace_option
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "json", "csv", "dir"]), default="jsonl"
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File or directory.")
def export_cmd(workspace: str | None, fmt: str, output: Path | None) -> None:
    """Export every key of a workspace as JSON Lines, JSON, CSV (key,value,encoding) or a
    directory tree.

    Examples: kyfs export > notes.jsonl; kyfs export -w notes --format dir -o ./notes
    """
    from kyfs.transfer import backup as backups

    with session(workspace) as (name, store):
        count = backups.export(store, name, fmt, output)
    if output is not None:
        click.echo(f"exported {count} keys to {output}", err=True)


@cli.command(name="import")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@workspace_option
@click.option(
    "--merge", type=click.Choice(["keep", "replace"]), help="When a key exists (default: refuse)."
)
@json_option
def import_cmd(path: Path, workspace: str | None, merge: str | None, as_json: bool) -> None:
    """Import an export (.jsonl, .json, .csv or a directory) into a workspace, in one
    transaction.

    Examples: kyfs import notes.jsonl -w notes; kyfs import ./tree --merge replace
    """
    from kyfs.transfer import backup as backups

    with session(workspace) as (name, store):
        count = backups.import_path(store, path, conflict=merge or "error")
    if as_json:
        _echo_json({"action": "import", "workspace": name, "source": str(path), "keys": count})
        return
    click.echo(f"imported {count} keys into {name}")
