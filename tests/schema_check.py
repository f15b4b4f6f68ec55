"""A small JSON Schema checker for the keywords pydantic emits ($ref, anyOf, type, properties, required,
additionalProperties, items, prefixItems, enum, const, minimum/maximum), used when ``jsonschema`` is not
installed; with it, the real validator runs as well."""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,), "null": (type(None),),
    "integer": (int,), "number": (int, float),
}


def errors(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None, where: str = "$") -> list[str]:
    """Every way ``instance`` breaks ``schema``, as 'path: problem' lines (empty when it conforms)."""
    root = root or schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return errors(instance, root["$defs"][name], root, where)
    if "anyOf" in schema:
        tried = [errors(instance, option, root, where) for option in schema["anyOf"]]
        if any(not t for t in tried):
            return []
        # Name the problems of the options of the right type (an object that breaks "RunReport | None").
        typed = [t for t in tried if not (len(t) == 1 and " is not " in t[0])]
        return typed[0] if len(typed) == 1 else [f"{where}: matches none of anyOf ({tried})"]
    found: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        allowed = kind if isinstance(kind, list) else [kind]
        ok = any(isinstance(instance, _TYPES[k]) and not (k in ("integer", "number") and isinstance(instance, bool))
                 for k in allowed)
        if not ok:
            return [f"{where}: {type(instance).__name__} is not {kind}"]
    if "enum" in schema and instance not in schema["enum"]:
        found.append(f"{where}: {instance!r} not in {schema['enum']}")
    if "const" in schema and instance != schema["const"]:
        found.append(f"{where}: {instance!r} != {schema['const']!r}")
    if "minimum" in schema and instance < schema["minimum"]:
        found.append(f"{where}: {instance} < {schema['minimum']}")
    if "maximum" in schema and instance > schema["maximum"]:
        found.append(f"{where}: {instance} > {schema['maximum']}")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        found += [f"{where}: missing required {key!r}" for key in schema.get("required", []) if key not in instance]
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in props:
                found += errors(value, props[key], root, f"{where}.{key}")
            elif extra is False:
                found.append(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                found += errors(value, extra, root, f"{where}.{key}")
    if isinstance(instance, list):
        prefix = schema.get("prefixItems")
        if prefix is not None:
            if len(instance) != len(prefix):
                found.append(f"{where}: {len(instance)} items, expected {len(prefix)}")
            for i, (value, sub) in enumerate(zip(instance, prefix, strict=False)):
                found += errors(value, sub, root, f"{where}[{i}]")
        elif "items" in schema:
            for i, value in enumerate(instance):
                found += errors(value, schema["items"], root, f"{where}[{i}]")
    return found


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """Raise AssertionError listing every problem; also run ``jsonschema`` when it is installed."""
    problems = errors(instance, schema)
    assert not problems, "\n".join(problems[:20])
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.Draft202012Validator(schema).validate(instance)
