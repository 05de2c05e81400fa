"""From the typed models to OpenAPI schemas and back: the machinery behind `hack/gen-crds.py`.

Two ways a schema is written down, both next to the model it describes:
- a status is a frozen dataclass; `dataclass_schema` renders its OpenAPI schema from the field
  types (str, int, float, bool, a StrEnum, tuple[X, ...], a nested dataclass, `X | None`) plus
  the `wire(...)` metadata (format, description, required, nullable);
- a spec is declared with `prop(...)`, whose defaults, enums and allow-lists are the very
  constants the parser uses, so the CRD and the parser cannot disagree on them.

`from_wire` reads a status dict into its dataclass (camelCase keys, nested dataclasses, enums);
`to_wire` turns one back. See docs/design-typed-api.md for how to add a field.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

Schema = dict[str, Any]
T = TypeVar("T")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def wire(
    *,
    default: Any = None,
    format: str | None = None,
    description: str | None = None,
    required: bool = False,
    nullable: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """A dataclass field with its schema metadata (the field defaults to `default`, None by default)."""
    meta: dict[str, Any] = {"format": format, "description": description, "required": required, "nullable": nullable}
    meta["extra"] = dict(extra or {})
    if isinstance(default, tuple | list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"wire": meta})
    return dataclasses.field(default=default, metadata={"wire": meta})


def rule(expr: str, message: str) -> dict[str, str]:
    """One CEL validation rule (x-kubernetes-validations)."""
    return {"rule": expr, "message": message}


def prop(
    type_: str,
    *,
    enum: type[enum.Enum] | Iterable[Any] | None = None,
    rules: Iterable[Mapping[str, str]] = (),
    list_type: str | None = None,
    **keywords: Any,
) -> Schema:
    """One OpenAPI property. Keywords keep their OpenAPI spelling and their order; `enum` takes an
    Enum class (its values, in declaration order); `rules` are CEL rules; `list_type` is
    x-kubernetes-list-type."""
    out: Schema = {"type": type_}
    if enum is not None:
        out["enum"] = [e.value for e in enum] if isinstance(enum, type) else list(enum)
    for k, v in keywords.items():
        if v is not None:
            out[k] = [*v] if isinstance(v, tuple) else v
    if list_type:
        out["x-kubernetes-list-type"] = list_type
    if rules:
        out["x-kubernetes-validations"] = [dict(r) for r in rules]
    return out


def obj(
    properties: Mapping[str, Schema],
    *,
    required: Iterable[str] = (),
    rules: Iterable[Mapping[str, str]] = (),
    **keywords: Any,
) -> Schema:
    """An object property: its keywords, then `required`, its CEL rules, and its properties last."""
    out: Schema = {"type": "object", **{k: v for k, v in keywords.items() if v is not None}}
    if req := list(required):
        out["required"] = req
    if rules:
        out["x-kubernetes-validations"] = [dict(r) for r in rules]
    out["properties"] = dict(properties)
    return out


_HINTS: dict[object, dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    """The resolved field types (the modules use postponed annotations), resolved once per class."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _type_schema(tp: Any) -> Schema:
    tp = _unwrap_optional(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return dataclass_schema(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [e.value for e in tp]}
    if typing.get_origin(tp) is tuple:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0])}
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"no schema for {tp!r}")


def dataclass_schema(cls: type[Any], *, description: str | None = None) -> Schema:
    """The OpenAPI object schema of a (status) dataclass, from its field types and wire metadata."""
    hints = _hints(cls)
    props: Schema = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("wire")
        if meta is None:
            continue
        s = _type_schema(hints[f.name])
        s = {"type": s["type"], **({"format": meta["format"]} if meta["format"] else {}), **s}
        if meta["nullable"]:
            s["nullable"] = True
        if meta["description"]:
            s["description"] = meta["description"]
        s.update(meta["extra"])
        if s.get("type") == "object":  # keep properties last, after description and the like
            s["properties"] = s.pop("properties")
        props[camel(f.name)] = s
        if meta["required"]:
            required.append(camel(f.name))
    if "conditions" in props:  # by convention the last status field, whatever the class hierarchy
        props["conditions"] = props.pop("conditions")
    out: Schema = {"type": "object"}
    if description:
        out["description"] = description
    if required:
        out["required"] = required
    out["properties"] = props
    return out


def wire_fields(cls: type[Any]) -> dict[str, str]:
    """camelCase key -> field name, for every field that is part of the wire format."""
    return {camel(f.name): f.name for f in dataclasses.fields(cls) if "wire" in f.metadata}


def from_wire(cls: type[T], data: Mapping[str, Any] | None) -> T:
    """A dataclass from its wire dict. Unknown keys are ignored (a newer operator may have written
    them); an enum value we do not know raises ValueError, as a phase we cannot reason about must."""
    data = data or {}
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, name in wire_fields(cls).items():
        if data.get(key) is not None:
            kwargs[name] = _convert(hints[name], data[key])
    return cls(**kwargs)


def _convert(tp: Any, value: Any) -> Any:
    tp = _unwrap_optional(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_wire(tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return tuple(_convert(item, v) for v in value)
    return value


def to_wire(value: Any) -> Any:
    """The wire form of a dataclass (camelCase keys, None fields left out), enum or tuple."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            if "wire" in f.metadata and (v := getattr(value, f.name)) is not None:
                out[camel(f.name)] = to_wire(v)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_wire(v) for v in value]
    return value


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """The apiserver's structural defaulting, for tests: fills `default`s into a spec the way
    kube-apiserver does (only below objects that are present, or that have a default themselves)."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        if isinstance(value, list) and "items" in schema:
            return [apply_defaults(schema["items"], v) for v in value]
        return value
    out = dict(value)
    for key, sub in (schema.get("properties") or {}).items():
        if key not in out and "default" in sub:
            out[key] = sub["default"]
        if key in out:
            out[key] = apply_defaults(sub, out[key])
    return out
