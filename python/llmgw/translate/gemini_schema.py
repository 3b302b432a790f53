"""JSON Schema (what OpenAI tools and `response_format` carry) → Gemini's `Schema` dialect.

Gemini's `Schema` is a subset of the OpenAPI 3.0 schema object, not JSON Schema. What differs, and
what this module does about it:

- `type` is one name; JSON Schema allows a list. `["string", "null"]` becomes
  `type: string, nullable: true`; a list of several non-null types becomes `anyOf` of each.
- `null` as a type does not exist: an `anyOf` branch `{"type": "null"}` becomes `nullable: true`
  on the result.
- `$ref` / `$defs` / `definitions` do not exist: local references (`#/$defs/X`) are inlined.
  A recursive schema cannot be inlined and is refused with a 400 naming where it recurses.
- `const` becomes a one-value `enum`; `enum` values must be strings in Gemini, so other values
  are written as strings.
- `oneOf` becomes `anyOf` (the closest Gemini has: "valid against one or more").
- Keys Gemini does not know (`additionalProperties`, `$schema`, `$id`, `strict`, `examples`,
  `patternProperties`, `not`, `if`/`then`/`else`, `allOf` with more than one branch ...) are
  dropped: Gemini answers 400 on unknown schema fields. `allOf` with one branch is inlined.
- `format` on strings is kept only for `enum` and `date-time` (the Gemini Developer API rejects
  the others); number formats `float`/`double`/`int32`/`int64` are kept.
- Types are written as Gemini's enum names (`STRING`, `OBJECT`, ...), the canonical spelling.
- An object with no properties cannot be declared (Gemini rejects an empty `properties`), so it
  stays a bare `{"type": "OBJECT"}`.

Callers that prefer to send JSON Schema untouched can use Gemini's newer `responseJsonSchema`
(upstream option `native_json_schema: true`), which skips this conversion for response formats.
"""

from __future__ import annotations

from typing import Any

from llmgw.errors import GatewayError

__all__ = ["to_gemini_schema"]

_KEEP_SCALARS = frozenset({
    "description", "title", "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength",
    "minProperties", "maxProperties", "pattern", "default", "example", "propertyOrdering",
})
_NUMBER_FORMATS = frozenset({"float", "double", "int32", "int64"})
_STRING_FORMATS = frozenset({"enum", "date-time"})
_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object"})
_MAX_DEPTH = 64  # deeper than any real tool schema; stops pathological input


def to_gemini_schema(schema: Any, param: str) -> dict[str, Any]:
    """Convert a JSON Schema (as sent by OpenAI clients) to Gemini's Schema; `param` names where
    it came from, for the 400 raised when it cannot be converted."""
    if not isinstance(schema, dict):
        raise GatewayError(400, f"{param} must be a JSON Schema object.", param=param, code="invalid_value")
    return _Converter(schema, param).convert(schema, param, (), 0)


class _Converter:
    def __init__(self, root: dict[str, Any], param: str) -> None:
        self.root = root
        self.param = param

    def fail(self, where: str, problem: str) -> GatewayError:
        return GatewayError(400, f"{where}: {problem} (Gemini's schema dialect cannot express it).",
                            param=self.param, code="invalid_value")

    def resolve(self, ref: str, where: str) -> dict[str, Any]:
        if ref != "#" and not ref.startswith("#/"):
            raise self.fail(where, f"only local $ref ('#/...') can be inlined, got {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/") if ref != "#" else ():
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise self.fail(where, f"$ref {ref!r} points nowhere")
            node = node[part]
        if not isinstance(node, dict):
            raise self.fail(where, f"$ref {ref!r} is not a schema")
        return node

    def convert(self, schema: Any, where: str, refs: tuple[str, ...], depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            raise self.fail(where, "schema nested too deeply")
        if schema is True or schema == {}:
            return {}
        if not isinstance(schema, dict):
            raise self.fail(where, "expected a schema object")
        if "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str):
                raise self.fail(where, "$ref must be a string")
            if ref in refs:
                raise self.fail(where, f"recursive $ref {ref!r}")
            target = self.resolve(ref, where)
            merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            return self.convert(merged, where, refs + (ref,), depth + 1)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1:
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self.convert({**all_of[0], **rest}, where, refs, depth + 1)

        out: dict[str, Any] = {}
        nullable = schema.get("nullable") is True
        kind = schema.get("type")
        if isinstance(kind, list):
            names = [k for k in kind if k != "null"]
            nullable = nullable or len(names) < len(kind)
            if len(names) == 1:
                kind = names[0]
            elif names:
                branches = [self.convert({**schema, "type": k}, where, refs, depth + 1) for k in names]
                out = {"anyOf": branches}
                if nullable:
                    out["nullable"] = True
                return out
            else:
                kind = None
        if kind == "null":
            kind, nullable = None, True
        if kind is not None:
            if kind not in _TYPES:
                raise self.fail(where, f"unknown type {kind!r}")
            out["type"] = kind.upper()

        branches_in = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(branches_in, list):
            branches = []
            for i, b in enumerate(branches_in):
                if isinstance(b, dict) and b.get("type") == "null" and len(b) == 1:
                    nullable = True
                    continue
                branches.append(self.convert(b, f"{where}.anyOf[{i}]", refs, depth + 1))
            if len(branches) == 1 and "type" not in out:
                out.update(branches[0])
            elif branches:
                out["anyOf"] = branches

        if "const" in schema:
            out["enum"] = [_enum_value(schema["const"])]
        elif isinstance(schema.get("enum"), list):
            values = [v for v in schema["enum"] if v is not None]
            nullable = nullable or len(values) < len(schema["enum"])
            out["enum"] = [_enum_value(v) for v in values]
            out.setdefault("type", "STRING")
            if out["type"] == "STRING":
                out["format"] = "enum"

        fmt = schema.get("format")
        if isinstance(fmt, str) and "format" not in out:
            kind_now = out.get("type")
            if (kind_now in ("NUMBER", "INTEGER") and fmt in _NUMBER_FORMATS) or \
                    (kind_now == "STRING" and fmt in _STRING_FORMATS):
                out["format"] = fmt

        props = schema.get("properties")
        if isinstance(props, dict) and props:
            out.setdefault("type", "OBJECT")
            out["properties"] = {name: self.convert(sub, f"{where}.properties.{name}", refs, depth + 1)
                                 for name, sub in props.items()}
            required = schema.get("required")
            if isinstance(required, list):
                out["required"] = [r for r in required if isinstance(r, str) and r in props]
        items = schema.get("items")
        if isinstance(items, dict):
            out.setdefault("type", "ARRAY")
            out["items"] = self.convert(items, f"{where}.items", refs, depth + 1)
        elif isinstance(items, list):  # tuple form: Gemini has one item schema; use anyOf of them
            out.setdefault("type", "ARRAY")
            conv = [self.convert(s, f"{where}.items[{i}]", refs, depth + 1) for i, s in enumerate(items)]
            out["items"] = conv[0] if len(conv) == 1 else {"anyOf": conv}

        for key in _KEEP_SCALARS:
            if key in schema:
                out[key] = schema[key]
        if nullable:
            out["nullable"] = True
        return out


def _enum_value(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
