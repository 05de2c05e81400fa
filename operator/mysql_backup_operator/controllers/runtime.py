"""The event-driven core: watch events in, keys on a work queue, one reconcile step per key.

kopf delivers watch events (handlers.py); this module decides which object keys they make worth
a look, keeps the newest body seen for each queued key (so a step needs no GET), and runs the
Backup, Restore and BackupPolicy state machines from worker threads. Nothing here polls:

- a Backup or Restore is reconciled when it (or its Job, or its pre-restore Backup) changes, when
  a lock it waits for is released, and otherwise only by a slow safety net while it is not
  finished (`resync_seconds`); a finished one costs nothing;
- a policy is reconciled when it or one of its Backups changes, and then sleeps until the time
  it asked for (the next schedule time, the next sync, the overdue threshold), capped by
  `policy_resync_seconds`.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from .. import jobs
from ..api import BACKUPS, LABEL_MANAGED_BY, MANAGED_BY, POLICIES, RESTORES
from ..api.backup import BackupPhase
from ..api.restore import RestorePhase
from ..k8s.kube import Kube, TransientError
from ..objectstore import StorageError
from .backup import BACKUP_FINALIZER, BackupController
from .cache import Cache, ObjectKey, backup_row, backup_terminal, db_key_of, restore_terminal, slim
from .operation import Context, scrub
from .peering import Peering, must_pause
from .policy import PolicyController
from .restore import RestoreController
from .workqueue import WorkQueue

LOG = logging.getLogger("mysql_backup_operator")
BACKUP, RESTORE, POLICY = "Backup", "Restore", "BackupPolicy"
PLURAL = {BACKUP: BACKUPS, RESTORE: RESTORES, POLICY: POLICIES}
# The finalizer kopf put on policies and Restores when timers drove them. kopf no longer manages
# any finalizer here, so the controllers take it off (one PATCH per object, once, after an upgrade).
LEGACY_FINALIZER = BACKUP_FINALIZER


@dataclass(frozen=True)
class Tuning:
    workers: int = 4
    resync_seconds: float = 30.0
    policy_resync_seconds: float = 600.0
    # Many Backup events for one policy (start-up, a burst) become one roll-up pass.
    policy_coalesce_seconds: float = 1.0
    # The start-up gate: the page size of our own LIST of each kind (10,000 Backups: 20 requests).
    list_chunk_size: int = 500
    trim_seconds: float = 60.0
    # With kopf peering: how often the peering object is read, and when a paused key is looked at again.
    peering_check_seconds: float = 10.0
    paused_retry_seconds: float = 5.0
    # The succeeded-agent-pod watch (`_watch_agent_pods`): how long one watch request lasts, and
    # the longest pause between attempts after errors (it doubles from 1 s).
    pod_watch_seconds: int = 300
    pod_watch_max_backoff_seconds: float = 300.0


def release_free_memory() -> None:
    """gc, then glibc's malloc_trim(0): returns freed heap to the OS (RSS), a no-op elsewhere."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _key(kind: str, body: Mapping[str, Any]) -> ObjectKey:
    m = body.get("metadata") or {}
    return (kind, str(m.get("namespace") or ""), str(m.get("name") or ""))


def _error_delay(e: ApiException) -> tuple[float, str]:
    """How soon to retry after an API error that escaped a step, and a one-line reason."""
    if e.status == 403 and "NamespaceTerminating" in str(e.body):
        return 30.0, "namespace is being deleted"
    if e.status == 403:
        return 30.0, f"forbidden by RBAC: {e.reason}; check the operator's ClusterRole"
    if e.status in (409, 422):
        return 1.0, "conflicting update; retrying"
    return 10.0, f"Kubernetes API error {e.status} {e.reason}"


class Runtime:
    def __init__(self, ctx: Context, tuning: Tuning, *, peering: Peering | None = None) -> None:
        self.kube: Kube = ctx.kube
        self.ctx = ctx
        self.cache: Cache = ctx.cache
        self.tuning = tuning
        self.backups = BackupController(ctx)
        self.restores = RestoreController(ctx)
        self.policies = PolicyController(ctx)
        self.queue: WorkQueue[ObjectKey] = WorkQueue(self.process, workers=tuning.workers)
        ctx.wake = self.queue.add
        self._bodies: dict[ObjectKey, dict[str, Any]] = {}
        self._active_restores: dict[ObjectKey, str] = {}  # non-terminal Restore -> its backupRef name
        self._retries: dict[ObjectKey, int] = {}
        self._lock = threading.Lock()
        self._started_at = time.monotonic()
        self._sleep = time.sleep  # the start-up listing's retry pause (tests replace it)
        self.peering = peering
        # Set while kopf's peering pauses this replica: the workers then leave every key queued.
        self.paused = threading.Event()

    def start(self) -> None:
        """Starts the workers at once, and a thread that lists every kind into the cache and then
        marks it synced. Until then Backups and Restores are reconciled (a new Backup must not wait
        for 10,000 old ones to be listed; taking a lock reads its queue live anyway), and policies
        wait."""
        self._started_at = time.monotonic()
        if self.peering is not None:
            self.check_peering()  # before the first worker runs
            threading.Thread(target=self._watch_peering, name="peering", daemon=True).start()
        self.queue.start()
        threading.Thread(target=self._sync_then_trim, name="sync-gate", daemon=True).start()
        for ns in self.ctx.settings.watch_namespaces or (None,):
            threading.Thread(target=self._watch_agent_pods, args=(ns,), name=f"pods-{ns or 'all'}", daemon=True).start()

    def check_peering(self, now: dt.datetime | None = None) -> bool:
        """Reads kopf's peering object(s) and pauses or resumes the workers by kopf's own rule."""
        assert self.peering is not None
        now = now or dt.datetime.now(dt.UTC)
        where: tuple[str | None, ...] = (None,) if self.peering.clusterwide else self.peering.namespaces
        try:
            statuses = [self.kube.peering_status(self.peering.name, ns) for ns in where]
        except (TransientError, ApiException) as e:
            LOG.warning("could not read the peering object %s: %s", self.peering.name, e)
            return self.paused.is_set()
        pause = any(must_pause(st, priority=self.peering.priority, now=now) for st in statuses)
        if pause != self.paused.is_set():
            LOG.info("peering: %s the work queue", "pausing" if pause else "resuming")
            (self.paused.set if pause else self.paused.clear)()
        return pause

    def _watch_peering(self) -> None:
        while True:
            time.sleep(self.tuning.peering_check_seconds)
            self.check_peering()

    def sync_cache(self) -> None:
        """The exact start-up gate: our own paged LIST of each kind, merged into the watch-fed cache.

        kopf lists every kind at start too, but does not tell its event handlers when that listing
        ends, and delivers it through one task per object, so no count or quiet period says "all
        there" for sure. A LIST of our own does: once every page of every kind is merged, the cache
        holds every object that existed when the listing began, and the watch has delivered, or
        will deliver, everything since. The merge keeps the watch's word where it is newer and never
        brings back an object deleted meanwhile (`Cache.merge_listed`). One request per page
        (`list_chunk_size`), at start-up only; a page's bodies are dropped once merged into rows."""
        self.cache.begin_listing()
        scope: tuple[str | None, ...] = self.ctx.settings.watch_namespaces or (None,)
        for kind, plural in PLURAL.items():
            for namespace in scope:
                self._list_into_cache(kind, plural, namespace)
        self.cache.end_listing()

    def _list_into_cache(self, kind: str, plural: str, namespace: str | None) -> None:
        token: str | None = None
        pages = rows = 0
        while True:
            try:
                items, next_token = self.kube.list_page(
                    plural, namespace=namespace, limit=self.tuning.list_chunk_size, continue_token=token
                )
            except TransientError as e:
                LOG.warning("listing %s: %s; retrying in %ss", plural, e, e.delay)
                self._sleep(e.delay)
                continue
            except ApiException as e:
                if e.status == 410:  # the continue token expired: a new snapshot, from the start
                    LOG.info("listing %s: continue token expired; listing again", plural)
                    token = None
                    continue
                delay, why = _error_delay(e)
                LOG.warning("listing %s: %s; retrying in %ss", plural, why, delay)
                self._sleep(delay)
                continue
            except Exception as e:  # a bug or a broken reply must not leave policies waiting forever
                LOG.exception("listing %s failed (%s); retrying in 10s", plural, type(e).__name__)
                self._sleep(10.0)
                continue
            pages += 1
            rows += self.cache.merge_listed(kind, items)
            del items
            if next_token is None:
                LOG.debug("listed %s: %d pages, %d rows taken", plural, pages, rows)
                return
            token = next_token

    def _sync_then_trim(self) -> None:
        self.sync_cache()
        LOG.info(
            "cache synced in %.1fs (%s); %d keys queued",
            time.monotonic() - self._started_at,
            ", ".join(f"{k} {v}" for k, v in self.cache.sizes().items()),
            len(self.queue),
        )
        # The initial listing (and each re-listing after a watch timeout) allocates and frees tens
        # of MiB of JSON; glibc keeps freed heap pages unless asked to give them back.
        while True:
            release_free_memory()
            time.sleep(self.tuning.trim_seconds)

    # ------------------------------------------------------------------ events (from kopf)

    def _enqueue(self, key: ObjectKey, body: Mapping[str, Any] | None, delay: float = 0.0) -> None:
        """Queues a key with the newest body seen (a private copy), so the step needs no GET."""
        if body is not None:
            copied = slim(body)
            with self._lock:
                self._bodies[key] = copied
        self.queue.add(key, delay)

    def backup_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = _key(BACKUP, body)
        row = backup_row(body)
        m = body.get("metadata") or {}
        if event_type == "DELETED":
            with self._lock:
                self._bodies.pop(key, None)
            if db := db_key_of(body):
                self.ctx.wake_waiting(db)  # the lock holder may be gone
        elif m.get("deletionTimestamp"):
            if BACKUP_FINALIZER in (m.get("finalizers") or []):
                self._enqueue(key, body)
        elif not backup_terminal(body):
            self._enqueue(key, body)
        # Whoever depends on this Backup: its policy (roll-up, retention), a Restore waiting for it.
        if row.policy:
            self.queue.add((POLICY, row.namespace, row.policy), self.tuning.policy_coalesce_seconds)
        with self._lock:
            waiting = [
                k
                for k, ref in self._active_restores.items()
                if k[1] == row.namespace and (ref == row.name or k[2] == row.restore)
            ]
        for k in waiting:
            self.queue.add(k)

    def restore_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = _key(RESTORE, body)
        m = body.get("metadata") or {}
        if event_type == "DELETED" or restore_terminal(body):
            with self._lock:
                self._active_restores.pop(key, None)
                self._bodies.pop(key, None)
            if event_type == "DELETED":
                if db := db_key_of(body):
                    self.ctx.wake_waiting(db)
                return
            if LEGACY_FINALIZER in (m.get("finalizers") or []):
                self._enqueue(key, body)
            return
        with self._lock:
            self._active_restores[key] = str(((body.get("spec") or {}).get("backupRef") or {}).get("name", ""))
        self._enqueue(key, body)

    def policy_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = _key(POLICY, body)
        if event_type == "DELETED":
            return
        self.queue.add(key)
        # Backups that waited for this policy to appear (GitOps may apply it last).
        for row in self.cache.backups_of_policy(key[1], key[2]):
            if row.phase == BackupPhase.PENDING:
                self.queue.add((BACKUP, row.namespace, row.name))

    def job_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A finished (or deleted) Job moves its Backup or Restore at once."""
        finished = any(
            c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
            for c in (body.get("status") or {}).get("conditions") or []
        )
        if not finished and event_type != "DELETED":
            return
        m = body.get("metadata") or {}
        for ref in m.get("ownerReferences") or []:
            if ref.get("kind") in (BACKUP, RESTORE) and ref.get("controller"):
                self.queue.add((ref["kind"], str(m.get("namespace") or ""), ref["name"]))

    def pod_event(self, event_type: str, pod: Mapping[str, Any]) -> None:
        """An agent that has succeeded moves its Backup or Restore at once (`jobs.agent_succeeded`)."""
        if event_type not in ("ADDED", "MODIFIED") or not jobs.agent_succeeded([pod]):
            return
        if (op := jobs.operation_of_pod(pod)) is not None:
            self.queue.add(op)

    def _watch_agent_pods(self, namespace: str | None) -> None:
        """Watches our pods (a server-side label selector: the API sends no other pod) to end an
        operation as soon as its agent has exited 0, about 2 s before its Job is marked complete
        (`jobs.agent_succeeded`). A few events per agent pod over its life. An accelerator only:
        when this watch is down (an error, RBAC without `watch` on pods), the Job watch ends
        operations as before. It starts from "now", so a restart does not replay old pods."""
        labels = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        where = namespace or "all namespaces"
        version: str | None = None
        backoff = 1.0
        while True:
            began = time.monotonic()
            try:
                if version is None:
                    version = self.kube.pods_version(namespace, label_selector=labels)
                events = self.kube.watch_pods(
                    namespace,
                    label_selector=labels,
                    resource_version=version,
                    timeout_seconds=self.tuning.pod_watch_seconds,
                )
                for event_type, pod, seen in events:
                    version = seen
                    self.pod_event(event_type, pod)
                backoff = 1.0
                if time.monotonic() - began >= 1.0:
                    continue  # the server's timeout ended the watch: resume at once
            except ApiException as e:
                if e.status == 410:
                    version = None  # too old: watch from a fresh version (the Job watch covers the gap)
                    backoff = 1.0
                LOG.log(
                    logging.WARNING if e.status != 410 else logging.DEBUG,
                    "agent pod watch (%s): %s %s; again in %.0fs",
                    where,
                    e.status,
                    e.reason,
                    backoff,
                )
            except TransientError as e:
                LOG.warning("agent pod watch (%s): %s; again in %.0fs", where, e, backoff)
            except Exception as e:  # the watch must never die: a broken stream, a bug in a reply
                version = None
                LOG.warning("agent pod watch (%s) failed: %s; again in %.0fs", where, type(e).__name__, backoff)
            self._sleep(backoff)
            backoff = min(backoff * 2, self.tuning.pod_watch_max_backoff_seconds)

    # ------------------------------------------------------------------ the worker side

    def _body(self, key: ObjectKey) -> dict[str, Any] | None:
        with self._lock:
            body = self._bodies.pop(key, None)
        if body is not None:
            return body
        kind, ns, name = key
        if kind == POLICY:
            return self.cache.policy(ns, name) or self.kube.get(POLICIES, ns, name)
        return self.kube.get(PLURAL[kind], ns, name)

    def process(self, key: ObjectKey) -> float | None:
        if self.paused.is_set():
            return self.tuning.paused_retry_seconds  # another replica is active: keep the key, do nothing
        try:
            delay = self._step(key)
        except TransientError as e:
            LOG.warning("%s %s/%s: %s; retrying in %ss", *key, e, e.delay)
            return e.delay
        except ApiException as e:
            delay, why = _error_delay(e)
            LOG.warning("%s %s/%s: %s; retrying in %ss", *key, why, delay)
            return delay
        return delay

    def _step(self, key: ObjectKey) -> float | None:
        body = self._body(key)
        if body is None:
            return None
        body.setdefault("kind", key[0])
        kind = key[0]
        if kind == POLICY:
            if not self.cache.synced.is_set():
                return 1.0  # a roll-up from half the Backups would write wrong counts
            self._drop_legacy_finalizer(POLICIES, body)
            if body["metadata"].get("deletionTimestamp"):
                return None
            wake = self.policies.reconcile(body)
            return (
                min(wake, self.tuning.policy_resync_seconds) if wake is not None else self.tuning.policy_resync_seconds
            )
        if kind == BACKUP:
            if body["metadata"].get("deletionTimestamp"):
                return self._finalize_backup(key, body)
            if backup_terminal(body):
                return None
            self.backups.reconcile(body)
            return None if backup_terminal(body) else self.tuning.resync_seconds
        self._drop_legacy_finalizer(RESTORES, body)
        if restore_terminal(body) or body["metadata"].get("deletionTimestamp"):
            return None
        self.restores.reconcile(body)
        return None if restore_terminal(body) else self.tuning.resync_seconds

    def _drop_legacy_finalizer(self, plural: str, body: dict[str, Any]) -> None:
        m = body["metadata"]
        finalizers = list(m.get("finalizers") or [])
        if LEGACY_FINALIZER not in finalizers:
            return
        rest = [f for f in finalizers if f != LEGACY_FINALIZER]
        self.kube.patch_metadata(
            plural, m["namespace"], m["name"], resource_version=m.get("resourceVersion"), finalizers=rest
        )
        m["finalizers"] = rest

    def _finalize_backup(self, key: ObjectKey, body: dict[str, Any]) -> float | None:
        """Holds the finalizer until the Backup's objects are gone (deletionPolicy Delete)."""
        m = body["metadata"]
        if BACKUP_FINALIZER not in (m.get("finalizers") or []):
            return None
        ns = m["namespace"]
        try:
            done = self.backups.delete_data(body)
        except StorageError as e:
            if e.no_credentials and self.kube.namespace_terminating(ns):
                # The namespace controller deletes Secrets and Backups together; holding the finalizer
                # would wedge the namespace forever. The objects stay in the bucket (sync can re-import).
                LOG.warning("Backup %s/%s: namespace is being deleted and %s; leaving its objects", ns, m["name"], e)
                done = "namespace deleted; objects left in storage"
            else:
                retry = self._retries.get(key, 0)
                self._retries[key] = retry + 1
                delay = float(min(5 * 2**retry, 60))
                message = scrub(f"could not delete backup data yet: {e}; retrying in {delay:.0f}s", [])
                self.kube.event(body, warning=True, reason="DeletionPending", message=message)
                LOG.warning("Backup %s/%s: %s", ns, m["name"], message)
                return delay
        self._retries.pop(key, None)
        rest = [f for f in m.get("finalizers") or [] if f != BACKUP_FINALIZER]
        self.kube.patch_metadata(BACKUPS, ns, m["name"], resource_version=m.get("resourceVersion"), finalizers=rest)
        LOG.info("Backup %s/%s deleted: %s", ns, m["name"], done)
        return None


def is_finished(kind: str, body: Mapping[str, Any]) -> bool:
    phase = str((body.get("status") or {}).get("phase") or "Pending")
    return BackupPhase(phase).terminal if kind == BACKUP else RestorePhase(phase).terminal
