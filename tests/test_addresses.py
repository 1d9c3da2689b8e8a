"""Issue 30 item 2, addresses: one rule for what a key argument names
(kyfs.core.address, docs/usage.md "Addresses"). ProntoDB's ``PROJECT.NAMESPACE.KEY`` and
``USER.CURSOR.NAMESPACE.KEY`` with ``--addresses prontodb``; a key with an ``@`` or dots
of its own reached with ``./KEY`` or ``--raw``; ProntoDB's contexts migrated as
``key__context``, which no longer reads as ``KEY@WORKSPACE``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kyfs.cli import cli
from kyfs.core.address import Address, parse
from kyfs.core.errors import InvalidInput
from kyfs.platform import paths
from tests.conftest import stored_values
from tests.test_transfer import prontodb_file, scoped_file


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


# --- the rule, as a pure function --------------------------------------------------------
@pytest.mark.parametrize(
    ("argument", "options", "expected"),
    [
        ("user.name", {}, Address("user.name")),
        ("app.config.json", {}, Address("app.config.json")),  # dots: ordinary by default
        ("user.name@alpha", {}, Address("user.name", "alpha")),
        ("k@agent1~notes", {}, Address("k", "agent1~notes")),
        ("x@ctx", {"raw": True}, Address("x@ctx")),
        ("./x@ctx", {}, Address("x@ctx")),
        ("./x@ctx", {"named": True}, Address("x@ctx")),
        ("x@ctx", {"named": True}, Address("x@ctx")),
        ("@ctx", {}, Address("@ctx")),
        ("x@not a name", {}, Address("x@not a name")),
        ("web.db.host", {"style": "prontodb"}, Address("db.host", "web")),
        ("web.db.host__prod", {"style": "prontodb"}, Address("db.host__prod", "web")),
        ("bob.prod.db.host", {"style": "prontodb"}, Address("db.host", None, "bob", "prod")),
        ("db.host", {"style": "prontodb"}, Address("db.host")),
        ("host", {"style": "prontodb"}, Address("host")),
        ("./web.db.host", {"style": "prontodb"}, Address("web.db.host")),
        ("web.db.host", {"style": "prontodb", "raw": True}, Address("web.db.host")),
        ("web.db.host", {"style": "prontodb", "named": True}, Address("web.db.host")),
        ("conf/app.config.json", {"style": "prontodb"}, Address("conf/app.config.json")),
        ("a..b", {"style": "prontodb"}, Address("a..b")),
        ("db.host@web", {"style": "prontodb"}, Address("db.host", "web")),
    ],
)
def test_the_rule(argument: str, options: dict[str, object], expected: Address) -> None:
    assert parse(argument, **options) == expected  # type: ignore[arg-type]


def test_a_prontodb_address_of_five_parts_and_a_bad_style_are_refused() -> None:
    with pytest.raises(InvalidInput, match="at most four parts"):
        parse("a.b.c.d.e", style="prontodb")
    assert parse("a.b.c.d.e") == Address("a.b.c.d.e")  # not in kyfs's own style
    with pytest.raises(InvalidInput, match="prontodb"):
        parse("k", style="redis")


# --- a key with an '@' or dots of its own --------------------------------------------------
@pytest.fixture
def collision(both_engines: str) -> None:
    """Workspace ``ctx`` holds ``x``; the active workspace ``main`` holds a key literally
    named ``x@ctx`` (as KyCLI data with such a key comes in)."""
    assert run("create", "ctx").exit_code == 0
    assert run("-w", "ctx", "set", "x", "other workspace").exit_code == 0
    assert run("use", "main", "--create").exit_code == 0
    assert run("-w", "main", "set", "x@ctx", "own key").exit_code == 0


@pytest.mark.usefixtures("collision")
def test_a_key_with_an_at_is_reached_with_the_escape_or_raw() -> None:
    assert run("get", "x@ctx").output == "other workspace"  # KEY@WORKSPACE, as documented
    assert run("get", "--raw", "x@ctx").output == "own key"
    assert run("get", "./x@ctx").output == "own key"
    assert json.loads(run("get", "./x@ctx", "--json").output)["key"] == "x@ctx"
    assert run("set", "./x@ctx", "changed").exit_code == 0
    assert run("ttl", "--raw", "x@ctx", "1h").exit_code == 0
    assert "expires" in run("ttl", "./x@ctx").output
    history = json.loads(run("history", "--raw", "x@ctx", "--json").output)
    assert [h.get("value") for h in history] == ["own key", "changed"]
    assert run("delete", "./x@ctx").exit_code == 0
    assert run("restore", "--raw", "x@ctx").exit_code == 0
    assert stored_values("main") == {"x@ctx": b"changed"}
    assert stored_values("ctx") == {"x": b"other workspace"}  # never touched


@pytest.mark.usefixtures("collision")
def test_a_missing_workspace_in_an_address_names_the_escape() -> None:
    done = run("set", "alice@example.com", "x")
    assert done.exit_code == 1
    assert "./KEY" in done.output and "--raw" in done.output
    assert run("set", "./alice@example.com", "x").exit_code == 0
    assert run("get", "--raw", "alice@example.com").output == "x"


# --- ProntoDB's addresses ---------------------------------------------------------------
@pytest.fixture
def web(both_engines: str) -> None:
    assert run("create", "web").exit_code == 0
    assert run("-w", "web", "set", "db.host", "localhost").exit_code == 0
    assert run("set", "web.db.host", "an ordinary key").exit_code == 0  # in default


@pytest.mark.usefixtures("web")
def test_dotted_keys_stay_ordinary_unless_prontodb_addresses_are_on() -> None:
    assert run("get", "web.db.host").output == "an ordinary key"
    assert run("--addresses", "prontodb", "get", "web.db.host").output == "localhost"
    assert run("get", "web.db.host", env={"KYFS_ADDRESSES": "prontodb"}).output == "localhost"
    assert run("--addresses", "prontodb", "get", "./web.db.host").output == "an ordinary key"
    assert run("--addresses", "prontodb", "get", "--raw", "web.db.host").output == (
        "an ordinary key"
    )
    config = paths.config_file()
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('addresses = "prontodb"\n')
    assert run("get", "web.db.host").output == "localhost"
    assert run("--addresses", "kyfs", "get", "web.db.host").output == "an ordinary key"


@pytest.mark.usefixtures("web")
def test_prontodb_addresses_write_read_and_delete() -> None:
    pronto = ("--addresses", "prontodb")
    assert run(*pronto, "set", "web.db.port", "5432").exit_code == 0
    assert run(*pronto, "set", "web.api.key__prod", "secret").exit_code == 0
    assert run(*pronto, "get", "web.api.key__prod").output == "secret"
    assert run(*pronto, "set", "db.user", "admin").exit_code == 0  # NAMESPACE.KEY: the key
    assert run(*pronto, "history", "web.db.port", "--json").exit_code == 0
    assert run(*pronto, "delete", "web.db.host").exit_code == 0
    assert stored_values("web") == {"db.port": b"5432", "api.key__prod": b"secret"}
    assert stored_values("default") == {"web.db.host": b"an ordinary key", "db.user": b"admin"}
    done = run(*pronto, "get", "a.b.c.d.e")
    assert done.exit_code == 2 and "./a.b.c.d.e" in done.output
    missing = run(*pronto, "get", "nosuch.db.host")
    assert missing.exit_code == 1 and "./KEY" in missing.output


def test_user_cursor_namespace_key(tmp_path: Path) -> None:
    other = tmp_path / "prod-data"
    other.mkdir()
    assert run("--user", "bob", "cursor", "set", "prod", str(other), "-w", "app").exit_code == 0
    assert run("--user", "bob", "--cursor", "prod", "create", "app").exit_code == 0
    pronto = ("--addresses", "prontodb")
    done = run(*pronto, "set", "bob.prod.config.debug", "true")
    assert done.exit_code == 0, done.output
    assert run("--user", "bob", "--cursor", "prod", "get", "config.debug").output == "true"
    assert run(*pronto, "get", "bob.prod.config.debug").output == "true"
    assert run("keys").output == ""  # nothing in the main identity's own workspace
    assert run(*pronto, "get", "bob.nosuch.config.debug").exit_code == 1
    assert run(*pronto, "get", "alice.prod.config.debug").exit_code == 1  # alice has none


def test_short_commands_take_the_escape_and_addresses(kyfs_home: Path) -> None:
    bin_dir = Path(sys.executable).parent

    def short(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True,
                              check=False, timeout=60)  # fmt: skip

    assert run("create", "ctx").exit_code == 0
    assert short("kys", "./x@ctx", "own key").returncode == 0
    assert short("kyg", "./x@ctx").stdout == b"own key"
    assert short("kyg", "--raw", "x@ctx").stdout == b"own key"
    assert short("kys", "--addresses", "prontodb", "ctx.db.host", "h").returncode == 0
    assert short("kyg", "db.host@ctx").stdout == b"h"
    assert short("kyd", "--raw", "x@ctx").returncode == 0
    assert stored_values("default") == {}


# --- migration: ProntoDB's contexts and keys with '@' --------------------------------------
@pytest.mark.usefixtures("both_engines")
def test_migrated_contexts_no_longer_collide(tmp_path: Path) -> None:
    source = tmp_path / "pronto.db"
    prontodb_file(source)  # web: db.host, db.host with context prod, flag
    assert run("create", "prod").exit_code == 0  # a workspace named as the context
    assert run("-w", "prod", "set", "db.host", "the prod workspace's").exit_code == 0
    assert run("migrate", "run", str(source), "--quiet").exit_code == 0
    assert stored_values("web") == {
        "db.host": b"localhost",
        "db.host__prod": b"db.internal",
        "flag": b"on",
    }
    assert run("use", "web").exit_code == 0
    assert run("get", "db.host__prod").output == "db.internal"  # before: prod's db.host
    assert run("--addresses", "prontodb", "get", "web.db.host__prod").output == "db.internal"
    assert "3 keys migrated, checksums match" in run("migrate", "validate", str(source)).output


def test_a_migrated_key_with_an_at_is_noted_and_reachable(tmp_path: Path) -> None:
    source = tmp_path / "scoped.db"
    scoped_file(source)  # alpha: k1, k2; beta team: k1
    conn = sqlite3.connect(source)
    conn.execute("INSERT INTO kvstore VALUES ('alpha', 'k1@beta_team', 'own key', NULL)")
    conn.commit()
    conn.close()
    plan = json.loads(run("migrate", "analyze", str(source), "--json").output)
    assert any("'k1@beta_team'" in n and "./k1@beta_team" in n for n in plan["invalid_names"])
    assert run("migrate", "run", str(source), "--quiet").exit_code == 0
    assert run("-w", "alpha", "get", "k1@beta_team").output == "own key"
    assert run("use", "alpha").exit_code == 0
    assert run("get", "./k1@beta_team").output == "own key"
    assert run("get", "k1@beta_team").output == "b1"  # KEY@WORKSPACE: beta_team's k1
