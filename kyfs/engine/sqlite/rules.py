"""Schema rules of a workspace: JSON Schema documents attached to key globs
(``meta.schemas``), checked with jsonschema (json-schema.org) inside every value write.

Thread-safety: as kyfs.engine.sqlite.connection.
"""

from __future__ import annotations

import json
from typing import Any

from kyfs.core.errors import InvalidInput, SchemaViolation
from kyfs.engine.sqlite.history import HistoryMixin


def validate(key: str, rule: dict[str, Any], value: bytes) -> None:
    """Check ``value`` of ``key`` against a schema rule ``{"glob": ..., "schema": {...}}``.

    Raises:
        SchemaViolation: (EINVAL, exit 2) naming the failing path in the document.
    """
    import jsonschema

    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaViolation(f"{key}: not JSON, but keys {rule['glob']!r} need: {exc}") from None
    validator = jsonschema.validators.validator_for(rule["schema"])(rule["schema"])
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        raise SchemaViolation(
            f"{key}: breaks the schema for {rule['glob']!r} at {where}: {error.message}"
        )


class RulesMixin(HistoryMixin):
    """Setting, listing and clearing schema rules."""

    def set_schema(self, glob: str, schema: dict[str, Any]) -> None:
        """Attach the JSON Schema ``schema`` to keys matching ``glob`` (replacing the one
        that glob had). Later writes of such keys must be JSON valid against it.

        Raises:
            InvalidInput: (exit 2) ``schema`` is not a valid JSON Schema.
        """
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise InvalidInput(f"not a valid JSON Schema: {exc.message}") from None
        rules = [r for r in self.schemas() if r["glob"] != glob]
        rules.append({"glob": glob, "schema": schema})
        self.set_meta("schemas", json.dumps(rules))

    def schemas(self) -> list[dict[str, Any]]:
        """The schema rules: ``[{"glob": ..., "schema": {...}}]``."""
        return list(json.loads(self.meta().get("schemas", "[]")))

    def clear_schema(self, glob: str | None = None) -> int:
        """Remove the rule of ``glob`` (every rule when None); return how many went."""
        rules = self.schemas()
        kept = [r for r in rules if glob is not None and r["glob"] != glob]
        self.set_meta("schemas", json.dumps(kept) if kept else None)
        return len(rules) - len(kept)
