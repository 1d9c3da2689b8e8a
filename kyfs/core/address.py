"""How one key argument names a key, and which workspace it is in (docs/usage.md,
"Addresses"). Pure functions, safe from any thread.

One rule, applied in this order; the first that applies decides:

1. ``raw``: the argument is the key, exactly as written.
2. A leading ``./`` (which no key can have: ``.`` is never a key component) is removed
   and the rest is the key, as written: ``./alice@example.com``, ``./app.config.json``.
3. A workspace named otherwise (``-w``, ``KYFS_WORKSPACE``, ``--db``): the argument is
   the key, as written.
4. ``KEY@WORKSPACE`` (skate's form): split at the last ``@`` when the part after it is
   a workspace name (or ``OWNER~NAME``) and the part before it is not empty.
5. With ProntoDB's addresses on (``style="prontodb"``), an argument without ``/`` of
   three or four non-empty dot-separated parts is ProntoDB's address:
   ``PROJECT.NAMESPACE.KEY`` is key ``NAMESPACE.KEY`` of workspace ``PROJECT`` (as
   ``kyfs migrate`` stores ProntoDB's rows), ``USER.CURSOR.NAMESPACE.KEY`` is key
   ``NAMESPACE.KEY`` of identity USER's cursor CURSOR (its data directory and
   workspace). One or two parts are the key itself (ProntoDB's ``namespace.key``);
   more than four is an error. ProntoDB's context suffix stays in the key
   (``web.db.host__prod`` is ``db.host__prod`` of ``web``).
6. Otherwise the argument is the key, as written: dots are ordinary characters.
"""

from __future__ import annotations

from dataclasses import dataclass

from kyfs.core.errors import InvalidInput
from kyfs.core.names import STORED_NAME_RE, WORKSPACE_NAME_RE

ESCAPE = "./"  # before a key: take the rest as written (no key starts so)
STYLES = ("kyfs", "prontodb")  # kyfs: KEY@WORKSPACE only; prontodb: also PROJECT.NS.KEY
PRONTO_SEP = "."


@dataclass(frozen=True)
class Address:
    """Where one key argument points.

    Attributes:
        key: the key, as the workspace stores it (not yet validated: the workspace does).
        workspace: the workspace named by the argument; None: the one the command uses.
        user: the identity whose cursor the argument names (ProntoDB's 4 parts), or None.
        cursor: that identity's cursor, or None (then ``user`` is None too).
    """

    key: str
    workspace: str | None = None
    user: str | None = None
    cursor: str | None = None


def check_style(value: object, source: str = "the address style") -> str:
    """``value`` when it is one of STYLES.

    Raises:
        InvalidInput: (exit 2) anything else, said of ``source``.
    """
    if value not in STYLES:
        raise InvalidInput(f"{source} must be one of {', '.join(STYLES)}, not {value!r}")
    return str(value)


def parse(argument: str, *, raw: bool = False, named: bool = False, style: str = "kyfs") -> Address:
    """The :class:`Address` of one key ``argument`` by the rule in this module's docstring.
    ``named``: a workspace was named otherwise (rule 3); ``style``: one of STYLES.

    Raises:
        InvalidInput: (exit 2) a ProntoDB address of more than four parts, or a bad style.
    """
    if raw:
        return Address(argument)
    if argument.startswith(ESCAPE):
        return Address(argument[len(ESCAPE) :])
    if named:
        return Address(argument)
    head, at, tail = argument.rpartition("@")
    if at and head and STORED_NAME_RE.fullmatch(tail):
        return Address(head, workspace=tail)
    if check_style(style) == "prontodb":
        return _prontodb(argument)
    return Address(argument)


def _prontodb(argument: str) -> Address:
    """Rule 5: ProntoDB's ``[USER.CURSOR.|PROJECT.]NAMESPACE.KEY``."""
    parts = argument.split(PRONTO_SEP)
    if "/" in argument or len(parts) < 3 or "" in parts:
        return Address(argument)
    key = PRONTO_SEP.join(parts[-2:])
    if len(parts) == 3 and STORED_NAME_RE.fullmatch(parts[0]):
        return Address(key, workspace=parts[0])
    if len(parts) == 4 and all(WORKSPACE_NAME_RE.fullmatch(p) for p in parts[:2]):
        return Address(key, user=parts[0], cursor=parts[1])
    if len(parts) > 4:
        raise InvalidInput(
            f"{argument!r}: a ProntoDB address has at most four parts"
            " (PROJECT.NAMESPACE.KEY or USER.CURSOR.NAMESPACE.KEY); for a key with dots"
            f" of its own write ./{argument} or --raw"
        )
    return Address(argument)
