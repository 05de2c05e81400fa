"""The operator process: logging, then kopf with the handlers of handlers.py."""

from __future__ import annotations

import logging
import os
import secrets
import time

import kopf

from . import handlers  # registers the kopf handlers
from .controllers.peering import Peering


def peering_priority(started: float) -> int:
    """The older process wins kopf's peering, so a replica that starts later (a rollout, a restarted
    pod) stands by instead of pausing the active one mid-operation. (A paused replica also stops
    its work queue, see controllers/peering.py, so a wrong order is safe, just a needless handover.)
    Distinct priorities matter too: kopf pauses *every* peer when two share one. Milliseconds since
    start-up order the peers; random low digits break a tie within the same millisecond."""
    return int((2**31 - started) * 1000) * 1000 + secrets.randbelow(1000)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("MBO_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = [n for n in os.environ.get("MBO_WATCH_NAMESPACES", "").split(",") if n]
    peering_name = os.environ.get("MBO_PEERING") or None
    priority = int(os.environ.get("MBO_PEERING_PRIORITY") or peering_priority(time.time()))
    if peering_name:
        # The work queue pauses by kopf's rule too (kopf's pause stops watches, not queued work).
        handlers.PEERING.append(Peering(name=peering_name, priority=priority, namespaces=tuple(namespaces)))
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=peering_name is None,
        peering_name=peering_name,
        priority=priority,
        liveness_endpoint=os.environ.get("MBO_LIVENESS_ENDPOINT") or None,
    )


if __name__ == "__main__":
    main()
