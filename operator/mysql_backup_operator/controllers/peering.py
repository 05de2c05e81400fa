"""kopf's peering decision, mirrored for our own work queue.

With `replicas > 1` kopf pauses a replica when another live peer has a higher priority (or the
same one): it stops that replica's watches, but it cannot stop the work our runtime already
queued (safety-net keys, a policy sleeping until its next schedule). So the runtime reads the same
peering object kopf keeps and pauses its workers by the same rule. main.peering_priority makes
the older replica win, so a rollout's newcomer stands by; this covers the rest (a clock skew
between nodes, a manually set MBO_PEERING_PRIORITY, a tie).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_LIFETIME_SECONDS = 60  # kopf's default for a peer that did not say


@dataclass(frozen=True)
class Peering:
    """Where kopf keeps the peers (a ClusterKopfPeering, or a KopfPeering per namespace) and our priority."""

    name: str
    priority: int
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def _parse(ts: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def must_pause(status: Mapping[str, Any], *, priority: int, now: dt.datetime) -> bool:
    """kopf's rule: pause while another live peer has a higher priority, or the same one (kopf then
    pauses everyone). Our own entry is recognised by our priority, which is unique by construction
    (milliseconds since start plus random low digits): two live entries with it are a tie."""
    same = 0
    for info in status.values():
        if not isinstance(info, Mapping):
            continue
        lastseen = info.get("lastseen")
        lifetime = dt.timedelta(seconds=int(info.get("lifetime") or DEFAULT_LIFETIME_SECONDS))
        if lastseen is not None and _parse(str(lastseen)) + lifetime <= now:
            continue  # dead: kopf ignores (and cleans) it
        p = int(info.get("priority") or 0)
        if p > priority:
            return True
        same += p == priority
    return same > 1
