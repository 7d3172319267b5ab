"""JSON Schema (draft 2020-12) from the shapes the loader reads with, for
editors (yaml-language-server) and ``check-jsonschema``.

The schema is as strict as the shape: unknown keys, wrong types, numbers out
of range, values outside an enum and missing required keys are rejected.
Where YAML readers differ it follows the loader: a string key takes any
scalar (``ref: 6.1`` is the text "6.1"), a list of strings also takes a
single one, booleans also take yes/no/on/off (YAML 1.1, which the loader
reads and YAML 1.2 tools do not), and an optional key may be left empty.
"""

from __future__ import annotations

import json
from typing import Any

from hvlab.config import schema
from hvlab.config.shape import Field, Shape

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean"]}
_YAML11_BOOLS = [w for word in ("yes", "no", "on", "off")
                 for w in (word, word.capitalize(), word.upper())]


def _optional(body: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [body, {"type": "null"}]}


def _described(doc: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"description": doc, **body} if doc else body


def field_schema(f: Field) -> dict[str, Any]:
    body: dict[str, Any]
    if f.type == "string":
        body = dict(_SCALAR)
        if f.required:
            body = {"anyOf": [{"type": "string", "minLength": 1},
                              {"type": ["number", "boolean"]}]}
    elif f.type == "integer":
        body = {"type": "integer"}
        if f.minimum is not None:
            body["minimum"] = f.minimum
        if f.maximum is not None:
            body["maximum"] = f.maximum
    elif f.type == "boolean":
        body = {"anyOf": [{"type": "boolean"}, {"enum": _YAML11_BOOLS}]}
    elif f.type == "enum":
        body = {"enum": list(f.choices)}
    elif f.type == "strings":
        body = {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]}
    elif f.type == "mapping":
        body = {"type": "object", "additionalProperties": {
            "type": ["string", "number", "boolean", "null"]}}
    else:
        assert f.shape is not None, f
        obj = object_schema(f.shape)
        body = obj if f.type == "object" else {"type": "array", "items": obj}
    return _described(f.doc, body if f.required else _optional(body))


def _plain(fields: dict[str, Field], doc: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object"}
    if doc:
        out["description"] = doc
    out["properties"] = {k: field_schema(f) for k, f in fields.items()}
    required = [k for k, f in fields.items() if f.required]
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    return out


def object_schema(shape: Shape) -> dict[str, Any]:
    """A mapping of ``shape``: exactly one alternative, or the case its
    ``by`` key names."""
    if shape.by is not None:
        branches = [{"if": {"properties": {shape.by: {"const": value}},
                            "required": [shape.by]},
                     "then": object_schema(shape.case(value))}
                    for value in shape.cases]
        return {**_plain(dict(shape.fields), shape.doc), "additionalProperties": True,
                "allOf": branches}
    if shape.alternatives:
        out: dict[str, Any] = {"oneOf": [
            _plain({**shape.fields, **alt.fields}, alt.doc) for alt in shape.alternatives]}
        if shape.doc:
            out["description"] = shape.doc
        return out
    return _plain(dict(shape.fields), shape.doc)


def document(name: str) -> dict[str, Any]:
    """The JSON Schema of the files in ``configs/<name>/`` (or ``configs/<name>.yaml``)."""
    return {"$schema": DRAFT, "title": f"hvlab configs/{name}",
            **object_schema(schema.FILES[name])}


def documents() -> dict[str, str]:
    """File name -> text, for every file kind under configs/."""
    return {f"{name}.schema.json": json.dumps(document(name), indent=2) + "\n"
            for name in schema.FILES}
