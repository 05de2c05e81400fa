"""All kopf wiring, and nothing else: watch events update the cache (controllers/cache.py) and
feed the work queue (controllers/runtime.py). No handler calls the API, so the thousands of
events of a start-up cost no request; there are no timers, no on.create/on.resume handlers (no
progress annotations to PATCH on 10,000 objects), no kopf-managed finalizers, and no
`@kopf.index` (its start-up barrier is quadratic in the number of objects; see the cache).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from . import __version__, metrics
from .api import BACKUPS, GROUP, LABEL_MANAGED_BY, MANAGED_BY, POLICIES, RESTORES, VERSION
from .api.policy import DEFAULT_AGENT_IMAGE
from .controllers.cache import Cache
from .controllers.operation import Context, Settings
from .controllers.peering import Peering
from .controllers.runtime import Runtime, Tuning
from .k8s.kube import Kube

LOG = logging.getLogger("mysql_backup_operator")
CACHE = Cache()
_runtime: list[Runtime] = []
# Set by main.py before kopf starts when replicas share a kopf peering (None: standalone).
PEERING: list[Peering] = []


def _float_env(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def runtime() -> Runtime:
    if not _runtime:
        settings = Settings(
            lock_namespace=os.environ.get("MBO_LOCK_NAMESPACE")
            or os.environ.get("POD_NAMESPACE")
            or "mysql-backup-operator",
            agent_image=os.environ.get("MBO_AGENT_IMAGE", DEFAULT_AGENT_IMAGE),
            watch_namespaces=tuple(n for n in os.environ.get("MBO_WATCH_NAMESPACES", "").split(",") if n),
        )
        kube = Kube()
        tuning = Tuning(
            workers=int(_float_env("MBO_WORKERS", 4)),
            resync_seconds=_float_env("MBO_RESYNC_SECONDS", 30),
            policy_resync_seconds=_float_env("MBO_POLICY_RESYNC_SECONDS", 600),
            list_chunk_size=int(_float_env("MBO_LIST_CHUNK_SIZE", 500)),
        )
        peering = PEERING[0] if PEERING else None
        _runtime.append(Runtime(Context(kube, settings, cache=CACHE), tuning, peering=peering))
    return _runtime[0]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own finalizer name differs from the Backups' data finalizer: kopf removes its finalizer
    # from objects no handler of its needs, and no handler here needs one.
    settings.persistence.finalizer = f"{GROUP}/kopf"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.enabled = False  # we post our own, meaningful events
    settings.watching.server_timeout = int(_float_env("MBO_WATCH_TIMEOUT", 600))
    settings.watching.client_timeout = settings.watching.server_timeout + 60
    # Only our Jobs, filtered by the apiserver (a handler's `labels=` filter alone would still
    # stream every Job of the cluster to us).
    settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    # The initial listing (and each re-listing after a watch timeout) in pages, not one 10,000-object
    # response: bounds the memory peak, which Python keeps as RSS afterwards. The runtime's own
    # start-up LIST (the cache's "synced" gate) uses the same page size.
    settings.watching.chunk_size = int(_float_env("MBO_LIST_CHUNK_SIZE", 500))
    # Kubernetes >= 1.34 can stream the initial state over the watch instead (no LIST at all).
    settings.watching.initial_streaming = os.environ.get("MBO_INITIAL_STREAMING", "") == "1"
    # kopf runs one asyncio worker per object, alive until the object has been quiet for
    # `idle_timeout` (default 5 s). The initial listing and each re-listing deliver every object
    # within a few seconds, so with the defaults ~11,000 workers (coroutine frames, queues) live at
    # once at 10,000 Backups: a ~100 MiB peak that fragmented the heap and stayed as RSS
    # (240 MiB idle). The runtime only copies the newest body into its own queue, so a worker
    # has nothing to wait for: short idle and batch windows keep a few hundred alive (150 MiB).
    settings.batching.idle_timeout = _float_env("MBO_WORKER_IDLE_SECONDS", 0.3)
    settings.batching.batch_window = _float_env("MBO_BATCH_WINDOW_SECONDS", 0.01)
    runtime().start()
    port = int(os.environ.get("MBO_METRICS_PORT", "9090"))
    if port:
        metrics.serve(port)
    LOG.info("mysql-backup-operator %s started (metrics on :%s)", __version__, port or "off")


# ---------------------------------------------------------------------------- events


def _cache(kind: str, event: kopf.RawEvent, body: kopf.Body) -> None:
    if event.get("type") == "DELETED":
        CACHE.remove(kind, body)
    else:
        CACHE.put(kind, body)


@kopf.on.event(GROUP, VERSION, BACKUPS)
async def backup_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _cache("Backup", event, body)
    runtime().backup_event(event.get("type"), body)


@kopf.on.event(GROUP, VERSION, RESTORES)
async def restore_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _cache("Restore", event, body)
    runtime().restore_event(event.get("type"), body)


@kopf.on.event(GROUP, VERSION, POLICIES)
async def policy_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _cache("BackupPolicy", event, body)
    runtime().policy_event(event.get("type"), body)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def job_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    runtime().job_event(event.get("type"), body)
