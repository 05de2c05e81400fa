"""The operator's in-memory view of the cluster: small rows derived from watched objects.

The watch-event handlers keep these up to date (the watch is the only reader of the API for
them); controllers read them instead of LISTing. Rows are deliberately small frozen
dataclasses, never whole bodies: at 10,000 Backups a body with managedFields is ~4 KiB, a row a
few hundred bytes. The Lease locks are *not* cached: the lock is always read live, only the
queue in front of it comes from here.

Everything in this module is pure (bodies in, rows out) except `Cache`, the thread-safe store.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..api import ANNOTATION_KEEP, LABEL_DB_KEY
from ..api.backup import BackupPhase, Trigger
from ..api.common import parse_iso
from ..api.restore import RestorePhase
from ..k8s.locking import Operation
from ..retention import BackupInfo

ANNOTATION_RESTORE = "mysqlbackup.dev/restore"
ObjectKey = tuple[str, str, str]  # (kind, namespace, name)


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


@dataclass(frozen=True, slots=True)
class BackupRow:
    """What the policy controller (roll-up, schedule, retention) needs to know about one Backup."""

    name: str
    namespace: str
    uid: str
    created: str
    policy: str
    trigger: str
    phase: str
    completed_at: str | None = None
    pinned: bool = False
    stored_bytes: int | None = None
    size_bytes: int | None = None
    duration: float | None = None
    reason: str | None = None
    restore: str | None = None  # the Restore a pre-restore Backup belongs to

    @property
    def terminal(self) -> bool:
        return BackupPhase(self.phase).terminal

    def info(self) -> BackupInfo:
        return BackupInfo(
            name=self.name,
            trigger=Trigger(self.trigger),
            phase=BackupPhase(self.phase),
            created=parse_iso(self.created),
            completed=parse_iso(self.completed_at) if self.completed_at else None,
            pinned=self.pinned,
        )


@dataclass(frozen=True, slots=True)
class OpRow:
    """A Backup or Restore holding or waiting for a database lock."""

    op: Operation
    phase: str
    trigger: str = ""

    @property
    def waiting(self) -> bool:
        """Waiting in the queue: Pending, and not a pre-restore Backup (those run under their Restore's lock)."""
        return self.phase == "Pending" and self.trigger != Trigger.PRE_RESTORE


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _object_key(kind: str, body: Mapping[str, Any]) -> ObjectKey:
    m = _meta(body)
    return (kind, str(m.get("namespace") or ""), str(m.get("name") or ""))


def backup_row(body: Mapping[str, Any]) -> BackupRow:
    m, spec, st = _meta(body), body.get("spec") or {}, body.get("status") or {}
    duration = st.get("durationSeconds")
    return BackupRow(
        name=m.get("name", ""),
        namespace=m.get("namespace", ""),
        uid=m.get("uid", ""),
        created=m.get("creationTimestamp") or "",
        policy=str((spec.get("policyRef") or {}).get("name", "")),
        trigger=str(spec.get("trigger") or Trigger.MANUAL),
        phase=str(st.get("phase") or "Pending"),
        completed_at=st.get("completedAt"),
        pinned=(m.get("annotations") or {}).get(ANNOTATION_KEEP) == "true",
        stored_bytes=_int(st.get("storedBytes")),
        size_bytes=_int(st.get("sizeBytes")),
        duration=float(duration) if isinstance(duration, int | float) else None,
        reason=st.get("reason"),
        restore=(m.get("annotations") or {}).get(ANNOTATION_RESTORE),
    )


def op_row(kind: str, body: Mapping[str, Any]) -> OpRow:
    m = _meta(body)
    return OpRow(
        op=Operation(
            created=m.get("creationTimestamp") or "",
            kind=kind,
            namespace=m.get("namespace", ""),
            name=m.get("name", ""),
            uid=m.get("uid", ""),
        ),
        phase=str((body.get("status") or {}).get("phase") or "Pending"),
        trigger=str((body.get("spec") or {}).get("trigger") or ""),
    )


def db_key_of(body: Mapping[str, Any]) -> str | None:
    return (_meta(body).get("labels") or {}).get(LABEL_DB_KEY)


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """A private deep copy of a body without managedFields: what a controller reads and may change
    in place (kopf's own view of the object is never mutated)."""
    m = {k: copy.deepcopy(v) for k, v in _meta(body).items() if k != "managedFields"}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": m,
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def resource_version(body: Mapping[str, Any]) -> int | None:
    """An object's resourceVersion as a number. The API calls it opaque, but the apiserver's are
    etcd revisions; when one is not a number, the merge below takes no chances with it."""
    try:
        return int(str(_meta(body).get("resourceVersion")))
    except ValueError:
        return None


def admit_listed(*, listed_rv: int | None, cached_rv: int | None, deleted_rv: int | None) -> bool:
    """Whether a row from our own start-up LIST may go into the cache next to the watch's rows.

    `cached_rv` is the version of the row the watch delivered for the same object (None: no row;
    0: a row with no usable version), `deleted_rv` the version of a DELETE event the watch
    delivered while the listing ran (None: none; 0: unknown). The LIST is a snapshot taken while
    events keep arriving, so a listed row can be older than what the watch already said:

    - an object deleted during the listing stays deleted, unless the listed row is a newer object
      of the same name (created again after the delete);
    - a row the watch delivered is replaced only by a strictly newer listed one;
    - with a version missing on either side, a listed row only fills a gap."""
    if deleted_rv is not None and (listed_rv is None or deleted_rv == 0 or listed_rv <= deleted_rv):
        return False
    if cached_rv is not None:
        return listed_rv is not None and cached_rv != 0 and listed_rv > cached_rv
    return True


def backup_terminal(body: Mapping[str, Any]) -> bool:
    return BackupPhase(str((body.get("status") or {}).get("phase") or "Pending")).terminal


def restore_terminal(body: Mapping[str, Any]) -> bool:
    return RestorePhase(str((body.get("status") or {}).get("phase") or "Pending")).terminal


class Cache:
    """The rows, kept current by the watch-event handlers and read by the worker threads.

    Why not `@kopf.index`: kopf holds every object's handlers until *all* objects are indexed, and
    it does so with one toggle per object in a shared condition that wakes every waiter on every
    change: quadratic in the number of objects. At 10,000 Backups a start-up never finished
    within minutes (measured; see docs/design-event-driven-core.md). The same rows fed from
    `on.event` handlers cost O(1) per event.

    `synced` is set once our own start-up LIST of every kind is in the cache (`begin_listing`,
    `merge_listed`, `end_listing`): policies wait for it, so a first roll-up never counts half the
    Backups. kopf's own initial listing arrives as events like any other and is not waited for
    (kopf does not say when it ends).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backups: dict[tuple[str, str], dict[str, BackupRow]] = {}  # (ns, policy) -> name -> row
        self._ops: dict[str, dict[ObjectKey, OpRow]] = {}  # db key -> object -> row
        self._policies: dict[tuple[str, str], dict[str, Any]] = {}
        # object -> (its policy group, its database key, its resourceVersion or 0)
        self._where: dict[ObjectKey, tuple[tuple[str, str] | None, str | None, int]] = {}
        # While our start-up LIST runs: object -> version of the DELETE event the watch delivered.
        self._deleted: dict[ObjectKey, int] | None = None
        self.synced = threading.Event()

    # ------------------------------------------------------------------ writers (the event loop)

    def put(self, kind: str, body: Mapping[str, Any]) -> None:
        """A watch event's object: the watch is the newest word on it, always applied."""
        with self._lock:
            self._put(_object_key(kind, body), body)

    def remove(self, kind: str, body: Mapping[str, Any]) -> None:
        key = _object_key(kind, body)
        with self._lock:
            self._drop(key)
            if self._deleted is not None:
                self._deleted[key] = max(self._deleted.get(key, 0), resource_version(body) or 0)

    # ------------------------------------------------------------------ our start-up LIST (a thread)

    def begin_listing(self) -> None:
        """From now until `end_listing`, DELETE events are remembered so a listed row cannot undo them."""
        with self._lock:
            self._deleted = {}

    def merge_listed(self, kind: str, bodies: Iterable[Mapping[str, Any]]) -> int:
        """Adds one page of our LIST by the rules of `admit_listed`; returns how many rows it took."""
        taken = 0
        with self._lock:
            deleted = self._deleted or {}
            for body in bodies:
                key = _object_key(kind, body)
                cached = self._where.get(key)
                if admit_listed(
                    listed_rv=resource_version(body),
                    cached_rv=cached[2] if cached is not None else None,
                    deleted_rv=deleted.get(key),
                ):
                    self._put(key, body)
                    taken += 1
        return taken

    def end_listing(self) -> None:
        """Every kind has been listed and merged: the cache holds every object, it is synced."""
        with self._lock:
            self._deleted = None
        self.synced.set()

    # ------------------------------------------------------------------ rows

    def _put(self, key: ObjectKey, body: Mapping[str, Any]) -> None:
        self._drop(key)
        kind = key[0]
        rv = resource_version(body) or 0
        if kind == "BackupPolicy":
            self._policies[(key[1], key[2])] = slim(body)
            self._where[key] = (None, None, rv)
            return
        group = None
        if kind == "Backup":
            row = backup_row(body)
            group = (row.namespace, row.policy)
            self._backups.setdefault(group, {})[row.name] = row
        db = db_key_of(body)
        if db:
            self._ops.setdefault(db, {})[key] = op_row(kind, body)
        self._where[key] = (group, db, rv)

    def _drop(self, key: ObjectKey) -> None:
        if key[0] == "BackupPolicy":
            self._policies.pop((key[1], key[2]), None)
        group, db, _ = self._where.pop(key, (None, None, 0))
        if group is not None:
            rows = self._backups.get(group, {})
            rows.pop(key[2], None)
            if not rows:
                self._backups.pop(group, None)
        if db is not None:
            ops = self._ops.get(db, {})
            ops.pop(key, None)
            if not ops:
                self._ops.pop(db, None)

    # ------------------------------------------------------------------ readers (the workers)

    def backups_of_policy(self, namespace: str, policy: str) -> list[BackupRow]:
        with self._lock:
            return list(self._backups.get((namespace, policy), {}).values())

    def ops_for_database(self, db_key: str) -> list[OpRow]:
        with self._lock:
            return list(self._ops.get(db_key, {}).values())

    def policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            body = self._policies.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {
                "backups": sum(len(v) for v in self._backups.values()),
                "operations": sum(len(v) for v in self._ops.values()),
                "policies": len(self._policies),
            }


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
