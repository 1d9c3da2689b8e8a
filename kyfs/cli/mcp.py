"""``kyfs mcp``: the MCP server for agents, on stdio or streamable HTTP
(kyfs.mcp_server)."""

from __future__ import annotations

import os

import click

from kyfs.app import ENV_DB_PATH
from kyfs.cli.base import cli, workspace_option


@cli.command("mcp")
@click.option(
    "--http",
    "port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Serve streamable HTTP on 127.0.0.1:PORT (bearer token), not stdio.",
)
@workspace_option
def mcp_command(port: int | None, workspace: str | None) -> None:
    """Serve kyfs to an MCP client (an agent): tools get, set (--if-version and
    --if-absent as if_version / if_absent), delete, list, search, history, restore and
    log, and each key's value as the resource kyfs://WORKSPACE/KEY with change
    notifications. Every call acts as the identity kyfs runs as (kyfs --user NAME mcp).

    Without --http it speaks on stdin/stdout (what an MCP client launches). With --http
    PORT it serves http://127.0.0.1:PORT/mcp to requests that carry the bearer token
    kept in the state directory (created on first use, mode 0600; its path is printed
    on stderr). Stop it with Ctrl-C or SIGTERM.

    Example: kyfs --user agent1 mcp -w project_alpha; kyfs mcp --http 8765
    """
    from kyfs import mcp_server
    from kyfs.core import actor
    from kyfs.platform import config

    actor.set_actor(actor.Actor("mcp", config.current_user()))
    watch = not os.environ.get(ENV_DB_PATH)  # kyfs.timeline watches the data directory
    if port is None:
        mcp_server.serve_stdio(workspace, watch=watch)
        return

    def ready(url: str) -> None:
        where = mcp_server.token_path()
        click.echo(f"kyfs mcp: serving {url}; bearer token in {where}", err=True)

    mcp_server.serve_http(workspace, port, watch=watch, ready=ready)
