#!/usr/bin/env python3
"""Generates docs/api-reference.md from the CRD schemas (the only source of truth for the API)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
KINDS = ["backuppolicies", "backups", "restores"]


def type_of(s: dict[str, Any]) -> str:
    if s.get("x-kubernetes-int-or-string"):
        return "int or string"
    t = s.get("type", "object")
    if t == "array":
        return f"[]{type_of(s.get('items', {}))}"
    if t == "object" and "additionalProperties" in s:
        return f"map[string]{type_of(s['additionalProperties'])}"
    return str(t)


def rules(s: dict[str, Any]) -> str:
    out = []
    if "enum" in s:
        out.append("one of " + ", ".join(f"`{e}`" for e in s["enum"]))
    for k, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "min length"), ("maxLength", "max length")):
        if k in s:
            out.append(f"{label} {s[k]}")
    if "pattern" in s:
        out.append(f"pattern `{s['pattern']}`")
    for v in s.get("x-kubernetes-validations", []):
        msg = " ".join(str(v.get("message", "")).split())
        out.append(f"rule: {msg[:160]}{'…' if len(msg) > 160 else ''}")
    return "; ".join(out)


def walk(s: dict[str, Any], path: str, required: set[str], rows: list[str]) -> None:
    for name, sub in (s.get("properties") or {}).items():
        p = f"{path}.{name}" if path else name
        desc = " ".join(str(sub.get("description", "")).split())
        default = f"`{sub['default']}`" if "default" in sub and sub["default"] not in ({}, "") else ""
        req = "yes" if name in required else ""
        rows.append(f"| `{p}` | {type_of(sub)} | {req} | {default} | {desc} {rules(sub)} |".replace("  ", " "))
        target = sub.get("items", sub) if sub.get("type") == "array" else sub
        if target.get("properties"):
            walk(target, p + ("[]" if sub.get("type") == "array" else ""), set(target.get("required", [])), rows)


def render() -> str:
    out = [
        "# API reference",
        "",
        "Generated from `crds/*.yaml` (themselves rendered from `operator/mysql_backup_operator/api/` by `make crds`) "
        "by `hack/gen-api-docs.py`; do not edit by hand. To add a field, see [the typed API](design-typed-api.md).",
        "Group `mysqlbackup.dev`, version `v1alpha1`, all kinds namespaced.",
        "",
    ]
    for kind in KINDS:
        crd = yaml.safe_load((REPO / "crds" / f"{kind}.yaml").read_text())
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        names = crd["spec"]["names"]
        out += [f"## {names['kind']}", "", " ".join(str(schema.get("description", "")).split()), ""]
        out += [f"Short names: {', '.join(names.get('shortNames', []))}; category `mysqlbackup`.", ""]
        for part in ("spec", "status"):
            sub = schema["properties"].get(part)
            if not sub:
                continue
            out += [
                f"### {names['kind']}.{part}",
                "",
                "| field | type | required | default | notes |",
                "|---|---|---|---|---|",
            ]
            rows: list[str] = []
            walk(sub, "", set(sub.get("required", [])), rows)
            for v in sub.get("x-kubernetes-validations", []):
                rows.append(f"| (whole {part}) | | | | rule: {' '.join(str(v.get('message', '')).split())} |")
            out += [*rows, ""]
    return "\n".join(out)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        current = (REPO / "docs" / "api-reference.md").read_text()
        sys.exit(0 if current == text else "docs/api-reference.md is stale: run hack/gen-api-docs.py")
    (REPO / "docs" / "api-reference.md").write_text(text)
