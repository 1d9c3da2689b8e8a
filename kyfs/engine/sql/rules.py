"""Schema rules of a workspace: JSON Schema documents attached to key globs
(``meta.schemas``), checked with jsonschema (json-schema.org) inside every value write.

Thread-safety: as kyfs.engine.sql.base.
"""

from __future__ import annotations

import json
from typing import Any

from kyfs.core.errors import InvalidInput, SchemaViolation
from kyfs.engine.sql.history import HistoryMixin

SHORT_TYPES = {  # the short form's type names -> JSON Schema's
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
}
# Keywords of JSON Schema (draft 2020-12 and earlier): a document with none of them
# constrains nothing, so it is refused rather than taken as a rule that lets all through.
SCHEMA_KEYWORDS = frozenset(
    [
        "$schema",
        "$id",
        "$ref",
        "$defs",
        "definitions",
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "items",
        "prefixItems",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
    ]
)


def as_json_schema(document: Any) -> dict[str, Any]:
    """The JSON Schema a rule document stands for: a JSON Schema as it is, or the short
    form of the second design note, ``{"name": "str", "age": "int?"}`` (types str, int,
    float, bool, list, dict; ``?`` makes a field optional), translated to an object
    schema with those properties, the non-optional ones required.

    Raises:
        InvalidInput: (exit 2) neither a JSON Schema nor the short form.
    """
    if not isinstance(document, dict) or not document:
        raise InvalidInput('a rule is a JSON object: a JSON Schema or {"field": "type"}')
    values = list(document.values())
    if all(isinstance(v, str) and v.rstrip("?") in SHORT_TYPES for v in values):
        properties = {k: {"type": SHORT_TYPES[v.rstrip("?")]} for k, v in document.items()}
        required = sorted(k for k, v in document.items() if not v.endswith("?"))
        return {"type": "object", "properties": properties, "required": required}
    if not SCHEMA_KEYWORDS & set(document):
        raise InvalidInput(
            "neither a JSON Schema (no keyword such as type or properties) nor the short"
            ' form {"field": "str|int|float|bool|list|dict[?]"}'
        )
    return document


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
        """Attach the rule ``schema`` (a JSON Schema, or the short form of
        :func:`as_json_schema`) to keys matching ``glob`` (replacing the one that glob
        had). Later writes of such keys must be JSON valid against it.

        Raises:
            InvalidInput: (exit 2) ``schema`` is neither a valid JSON Schema nor the short
                form.
        """
        import jsonschema

        schema = as_json_schema(schema)
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

    def empty_refused(self, key: str) -> str | None:
        """Why an empty value at ``key`` breaks a schema rule (the sentence a write would
        fail with), or None when no rule refuses it. The mount asks this of a key it has
        just created (``touch``): the empty value stands unless a write follows."""
        from fnmatch import fnmatchcase

        for rule in self.schemas():
            if fnmatchcase(key, rule["glob"]):
                try:
                    validate(key, rule, b"")
                except SchemaViolation as exc:
                    return str(exc)
        return None

    def clear_schema(self, glob: str | None = None) -> int:
        """Remove the rule of ``glob`` (every rule when None); return how many went."""
        rules = self.schemas()
        kept = [r for r in rules if glob is not None and r["glob"] != glob]
        self.set_meta("schemas", json.dumps(kept) if kept else None)
        return len(rules) - len(kept)
