"""Property-based tests (Hypothesis): whatever names, keys, values, durations and import
records a user or a script feeds the CLI, it answers with an exit code from
docs/exit-codes.md and one line of error — never a traceback — and touches nothing
outside KYFS_HOME.

The CLI runs in-process (click's CliRunner) so that hundreds of cases take seconds;
``KYFS_PROPERTY_EXAMPLES`` raises the number of cases per property.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kyfs.cli import cli

EXAMPLES = int(os.environ.get("KYFS_PROPERTY_EXAMPLES", "150"))
ROOT = Path(__file__).resolve().parent.parent
EXIT_CODES = {
    int(code)
    for code in re.findall(r"^\| (\d+) \| ", (ROOT / "docs/exit-codes.md").read_text(), re.M)
}
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text as argv can carry it: any characters, and undecodable bytes as surrogateescape.
argv_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("ab./-_ \\\0é☃.."), max_size=20),
    st.binary(max_size=20).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["..", ".", "/", "a//b", "/abs", ".versions", "-w", "--", "default", ""]),
).filter(lambda s: "\0" not in s)  # a NUL cannot reach argv through execve
durations = st.one_of(
    st.from_regex(r"\d{1,30}(\.\d{1,5})?[smhd]?", fullmatch=True),
    st.sampled_from(["0", "-1", "nan", "inf", "1e400", "10m", ""]),
    st.text(max_size=10),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "key": argv_text | json_values,
        "value": json_values,
        "value_base64": st.text(max_size=12) | json_values,
        "mode": st.text(max_size=6) | json_values,
        "created_ns": json_values | st.integers(),
        "mtime_ns": json_values | st.integers(),
    },
)


def snapshot(top: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in top.rglob("*") if p.is_file()}


def check(result: object, outside: Path, before: dict[str, int]) -> None:
    from click.testing import Result

    assert isinstance(result, Result)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback: {result.exception!r}\n{result.output}")
    assert result.exit_code in EXIT_CODES, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert snapshot(outside) == before


def _setup(tmp_path: Path) -> tuple[CliRunner, Path, dict[str, int]]:
    runner = CliRunner()
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "canary").write_text("untouched")
    runner.invoke(cli, ["create", "default"])
    runner.invoke(cli, ["set", "existing", "value"])
    return runner, outside, snapshot(outside)


@SETTINGS
@given(
    command=st.sampled_from(
        ["set", "get", "delete", "history", "restore", "ttl", "keys", "use", "create", "drop",
         "rename", "search", "archive", "export"]
    ),
    first=argv_text,
    second=argv_text,
    duration=durations,
)  # fmt: skip
def test_cli_never_tracebacks_on_odd_arguments(
    tmp_path: Path, kyfs_home: Path, command: str, first: str, second: str, duration: str
) -> None:
    runner, outside, before = _setup(tmp_path)
    args = {
        "set": ["set", first, second, "--ttl", duration],
        "get": ["get", first, "--json"],
        "delete": ["delete", first],
        "history": ["history", first, "--json"],
        "restore": ["restore", first],
        "ttl": ["ttl", first, duration],
        "keys": ["keys", first, "--glob", second],
        "use": ["use", first],
        "create": ["create", first, "--ttl", duration],
        "drop": ["drop", first, "--yes"],
        "rename": ["rename", first, second],
        "search": ["search", first, "--raw"],
        "archive": ["archive", first],
        "export": ["export", "-w", first],
    }[command]
    stdin = second.encode("utf-8", "surrogateescape")
    check(runner.invoke(cli, args, input=stdin), outside, before)


@SETTINGS
@given(lines=st.lists(records, min_size=1, max_size=4), as_document=st.booleans())
def test_imports_of_any_records_never_traceback(
    tmp_path: Path, kyfs_home: Path, lines: list[dict[str, object]], as_document: bool
) -> None:
    runner, outside, before = _setup(tmp_path)
    source = tmp_path / ("in.json" if as_document else "in.jsonl")
    if as_document:
        source.write_text(json.dumps({"keys": lines}, default=str))
    else:
        source.write_text("".join(json.dumps(r, default=str) + "\n" for r in lines))
    result = runner.invoke(cli, ["import", str(source)])
    check(result, outside, before)
    listing = runner.invoke(cli, ["keys", "--json"])
    assert listing.exit_code == 0
    for key in json.loads(listing.output):
        assert not key.startswith("/") and ".." not in key.split("/")
