"""Structure: validate a loaded rule file against its JSON Schema, then build its model.

In: a `LoadedYaml` and the file kind. Out: the pydantic model, or every structural
problem located at `file:line:col` through the loader's marks.

The JSON Schemas are generated from `engine.schema.models` and committed beside this
module (`<kind>.schema.json`) so editors can autocomplete rule files; a test fails
when the committed files and the models drift (`tiv schema --write` regenerates).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from engine.errors import Problem, json_path, pydantic_problems
from engine.loading.yamlfile import LoadedYaml
from engine.schema.models import FILE_KINDS

SCHEMA_DIR = Path(__file__).parent

__all__ = ["SCHEMA_DIR", "generated_schema", "schema_path", "validate_document", "write_schemas"]


def generated_schema(kind: str) -> dict[str, Any]:
    model = FILE_KINDS[kind]
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://tiv.dev/schema/{kind}.schema.json"
    return schema


def schema_path(kind: str) -> Path:
    return SCHEMA_DIR / f"{kind}.schema.json"


def write_schemas() -> list[Path]:
    written = []
    for kind in FILE_KINDS:
        path = schema_path(kind)
        path.write_text(json.dumps(generated_schema(kind), indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = generated_schema(kind)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validate_document(loaded: LoadedYaml, kind: str) -> tuple[BaseModel | None, list[Problem]]:
    data = loaded.data
    if not isinstance(data, dict):
        return None, [
            Problem("schema.type", f"a {kind} file must be a mapping of keys", loaded.locate(""))
        ]
    problems = [_problem(error, loaded) for error in _validator(kind).iter_errors(data)]
    if problems:
        return None, _dedupe(problems)
    try:
        return FILE_KINDS[kind].model_validate(data), []
    except PydanticError as exc:
        found = pydantic_problems(exc.errors(), lambda kind: f"schema.{kind}", where=loaded.locate)
        return None, _dedupe(found)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _problem(error: ValidationError, loaded: LoadedYaml) -> Problem:
    if error.validator in ("anyOf", "oneOf") and error.context:
        # For `X | None` sections the branch that says "not null" is never the useful one:
        # the error deepest in the document is where the actuary's typo is.
        deepest = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
        if len(deepest.absolute_path) > len(error.absolute_path):
            return _problem(deepest, loaded)
        chosen = best_match(error.context)
        if chosen is not None and len(chosen.absolute_path) > len(error.absolute_path):
            return _problem(chosen, loaded)
    parts = list(error.absolute_path)
    path = json_path(parts)
    where = loaded.locate(path)
    message = error.message
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(error.schema.get("properties", {}))
        name = extra[0] if extra else "?"
        key_path = json_path([*parts, name])
        return Problem(
            "schema.unknown_key",
            f"unknown key `{name}`" + (f" (allowed here: {allowed})" if allowed else ""),
            loaded.locate(key_path, key=True),
        )
    if error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        return Problem(
            "schema.required",
            f"missing required key `{missing}`",
            loaded.locate(path, key=bool(path)),
        )
    if error.validator in ("enum", "const"):
        options = error.validator_value if error.validator == "enum" else [error.validator_value]
        message = f"{error.instance!r} is not allowed here; use one of: " + ", ".join(
            str(o) for o in options
        )
    elif error.validator == "pattern":
        what = error.schema.get("description") or f"the pattern {error.validator_value}"
        message = f"{error.instance!r} is not a valid {what}"
    elif error.validator == "propertyNames":
        message = f"invalid key: {error.message}"
    elif error.validator in ("anyOf", "oneOf"):
        message = f"{_short(error.instance)} is not a valid value here"
    elif error.validator == "type":
        message = f"{_short(error.instance)} should be a {error.validator_value}"
    return Problem(f"schema.{error.validator}", message, where)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
