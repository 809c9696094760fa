"""Backward-compatibility check of a contract against its published JSON Schema.

An existing (event type, version) may only change in ways every reader of that version tolerates:
adding an *optional* property, relaxing a constraint, adding documentation. These are breaking and
reported: removing a property, adding a required property, making an optional property required,
changing a property's type, narrowing an enum/const. The rules follow Confluent Schema Registry's
BACKWARD+FORWARD ("FULL") notion for JSON Schema
(https://docs.confluent.io/platform/current/schema-registry/fundamentals/schema-evolution.html).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.export import JSON_DIR, contract_schemas

__all__ = ["breaking_changes", "check_against_published"]


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        schema = root.get("$defs", {})[name]
    return schema


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        out: set[str] = set()
        for option in schema["anyOf"]:
            out |= _types(option, root)
        return out
    if "const" in schema:
        return {f"const:{json.dumps(schema['const'])}"}
    if "enum" in schema:
        return {f"const:{json.dumps(v)}" for v in schema["enum"]}
    kind = schema.get("type", "any")
    if kind == "integer":
        return {"integer"}
    return {str(kind)}


def breaking_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    path: str = "",
    old_root: dict[str, Any] | None = None,
    new_root: dict[str, Any] | None = None,
) -> list[str]:
    """Return human-readable breaking changes from ``old`` to ``new`` (empty list = compatible).

    Both are JSON Schemas as produced by Pydantic (objects with ``properties``/``required``,
    ``$defs`` references, ``anyOf`` for optionals). Recurses into nested objects and arrays.
    """
    old_root = old_root or old
    new_root = new_root or new
    old = _resolve(old, old_root)
    new = _resolve(new, new_root)
    problems: list[str] = []

    old_types, new_types = _types(old, old_root), _types(new, new_root)
    if "any" not in new_types and not old_types <= new_types:
        lost = sorted(old_types - new_types)
        problems.append(f"{path or '<root>'}: type changed, no longer accepts {lost}")
        return problems

    if "properties" in old or "properties" in new:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        old_req, new_req = set(old.get("required", [])), set(new.get("required", []))
        for name in sorted(old_props.keys() - new_props.keys()):
            problems.append(f"{path}.{name}: property removed")
        for name in sorted(new_req - old_req):
            if name not in old_props:
                problems.append(f"{path}.{name}: new required property")
            else:
                problems.append(f"{path}.{name}: optional property became required")
        for name in sorted(old_props.keys() & new_props.keys()):
            problems += breaking_changes(
                old_props[name], new_props[name], path=f"{path}.{name}",
                old_root=old_root, new_root=new_root,
            )  # fmt: skip
    if "items" in old and "items" in new:
        problems += breaking_changes(old["items"], new["items"], path=f"{path}[]", old_root=old_root, new_root=new_root)
    if "anyOf" in old and "anyOf" in new:
        # Optional[X]: compare the non-null branches pairwise by position.
        old_opts = [o for o in old["anyOf"] if o.get("type") != "null"]
        new_opts = [o for o in new["anyOf"] if o.get("type") != "null"]
        for i, (o, n) in enumerate(zip(old_opts, new_opts, strict=False)):
            problems += breaking_changes(o, n, path=f"{path}|{i}", old_root=old_root, new_root=new_root)
    return problems


def check_against_published(json_dir: Path = JSON_DIR) -> dict[str, list[str]]:
    """Compare every current contract with its checked-in schema file.

    Returns ``{file name: [breaking changes]}`` for files with problems; a contract without a file
    is new and passes (export it). Raises nothing: callers decide how to fail.
    """
    out: dict[str, list[str]] = {}
    for name, schema in contract_schemas().items():
        published = json_dir / name
        if not published.exists():
            continue
        problems = breaking_changes(json.loads(published.read_text(encoding="utf-8")), schema)
        if problems:
            out[name] = problems
    return out
