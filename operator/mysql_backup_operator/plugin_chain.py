"""`kubectl mysqlbackup chain POLICY`: the full backups and the archived binlogs of a policy as one
chain, oldest first, with the recoverable windows and the gaps that end them.

Read from the API only (the policy's status and its Backups): the plugin has no storage access.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .api import BACKUPS, POLICIES


def chain_rows(policy: dict[str, Any], backups: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Pure: one row per full backup, per run of binlog segments (a window) and per gap."""
    name = policy["metadata"]["name"]
    pit = (policy.get("status") or {}).get("pointInTimeRecovery") or {}
    rows: list[tuple[str, int, list[str]]] = []
    for b in backups:
        st = b.get("status") or {}
        if (b.get("spec") or {}).get("policyRef", {}).get("name") != name or st.get("phase") != "Completed":
            continue
        binlog = st.get("binlog") or {}
        where = f"{binlog.get('file')}:{binlog.get('position')}" if binlog.get("file") else "no binlog position"
        rows.append(
            (st.get("completedAt") or "", 0, [st.get("completedAt") or "-", "full", b["metadata"]["name"], where])
        )
    for w in pit.get("windows") or []:
        span = f"{w.get('firstFile')} .. {w.get('lastFile')}"
        detail = f"{w.get('segments')} segments; recoverable {w.get('from')} -> {w.get('to')}"
        if w.get("endsAtGap"):
            detail += f" (ends at a {w['endsAtGap']} gap)"
        rows.append((w.get("from") or "", 1, [w.get("from") or "-", "binlogs", span, detail]))
    for g in pit.get("gaps") or []:
        when = g.get("from") or ""
        rows.append((when, 2, [when or "-", "GAP", g.get("reason") or "-", g.get("message") or ""]))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [["TIME", "KIND", "NAME / FILES", "DETAIL"], *(r[2] for r in rows)]


def render_chain(policy: dict[str, Any], backups: Sequence[dict[str, Any]]) -> str:
    from .plugin import table

    pit = (policy.get("status") or {}).get("pointInTimeRecovery")
    rows = chain_rows(policy, backups)
    head = "" if pit else "(binlog archiving is off for this policy: spec.pointInTimeRecovery)\n"
    tail = f"\nlast archived: {pit.get('lastArchivedTime') or '-'}" if pit else ""
    return head + table(rows) + tail


def cmd_chain(c: Any, a: argparse.Namespace) -> int:
    policy = c.get(POLICIES, a.policy)
    print(render_chain(policy, c.list(BACKUPS)))
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    ch = sub.add_parser("chain", parents=[common], help="full backups and archived binlogs of a policy as one chain")
    ch.add_argument("policy")
    ch.set_defaults(fn=cmd_chain)
