"""crds/*.yaml as rendered from the typed models (`hack/gen-crds.py` writes them; a unit test
checks the committed files are exactly this output)."""

from __future__ import annotations

from typing import Any

import yaml

from . import backup, policy, restore

HEADER = "# Generated from operator/mysql_backup_operator/api/ by hack/gen-crds.py (make crds); do not edit.\n"
_FLOW_MAX = 100


class _Dumper(yaml.SafeDumper):
    """Block style, except for small leaf mappings and scalar lists, which read best inline
    (`name: {type: string, minLength: 1}`, `enum: [Delete, Retain]`); list items indented."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _leaf(value: Any) -> bool:
    if isinstance(value, dict):
        return all(
            not isinstance(v, dict | list) or (isinstance(v, list) and all(_scalar(i) for i in v))
            for v in value.values()
        )
    return isinstance(value, list) and all(_scalar(i) for i in value)


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _short(value: Any) -> bool:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return len(text) <= _FLOW_MAX and "\n" not in text


def _represent_dict(dumper: yaml.SafeDumper, value: dict[str, Any]) -> yaml.Node:
    flow = bool(value) and _leaf(value) and _short(value)
    return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=flow)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    flow = _leaf(value) and _short(value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = ">" if len(value) > _FLOW_MAX and "\n" not in value and len(value) < 2000 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)

KINDS = {"backuppolicies": policy.crd, "backups": backup.crd, "restores": restore.crd}


def render(doc: dict[str, Any]) -> str:
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=_FLOW_MAX + 20, allow_unicode=True)


def rendered() -> dict[str, str]:
    """File name -> YAML text of every generated CRD."""
    return {f"{plural}.yaml": render(make()) for plural, make in KINDS.items()}
