"""The operator process: logging, then kopf with the handlers of handlers.py."""

from __future__ import annotations

import logging
import os
import secrets

import kopf

from . import handlers  # noqa: F401  (registers the kopf handlers)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("MBO_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = [n for n in os.environ.get("MBO_WATCH_NAMESPACES", "").split(",") if n]
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=os.environ.get("MBO_PEERING", "") == "",
        peering_name=os.environ.get("MBO_PEERING") or None,
        # kopf pauses *every* peer when two share a priority, so equal replicas would all stand
        # still; a random priority per process makes exactly one of them the active one.
        priority=int(os.environ.get("MBO_PEERING_PRIORITY") or secrets.randbelow(2**31) + 1),
        liveness_endpoint=os.environ.get("MBO_LIVENESS_ENDPOINT") or None,
    )


if __name__ == "__main__":
    main()
