"""One operation per database: a queue decided by pure functions, enforced by a Lease.

The Lease (coordination.k8s.io) lives in the operator's namespace, so it survives operator
restarts and, with optimistic concurrency on its resourceVersion, two replicas cannot both win.
Queue order is creation order, read from the Backups and Restores themselves, so a user sees
exactly who is ahead (condition Queued, reason DatabaseBusy).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from .. import naming
from ..api import Reason


@dataclass(frozen=True, order=True)
class Operation:
    """A Backup or Restore competing for a database. Ordered by creation (then name for ties)."""

    created: str
    kind: str
    namespace: str
    name: str
    uid: str

    @property
    def identity(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}/{self.uid}"

    @property
    def display(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @staticmethod
    def parse_identity(identity: str) -> tuple[str, str, str, str] | None:
        parts = identity.split("/")
        if len(parts) != 4:
            return None
        return parts[0], parts[1], parts[2], parts[3]


@dataclass(frozen=True)
class Decision:
    acquire: bool
    reason: Reason | None = None
    blocker: str = ""
    position: int = 0


def decide(*, me: Operation, holder: str | None, holder_alive: bool, waiting: Sequence[Operation]) -> Decision:
    """Whether `me` may take the lock now.

    - the lock is mine already: proceed (restart after a crash);
    - someone alive holds it: wait, naming them (DatabaseBusy);
    - it is free or stale: only the earliest waiting operation may take it (creation order).
    """
    ahead = sorted(op for op in waiting if op < me and op.uid != me.uid)
    position = len(ahead) + 1
    if holder == me.identity:
        return Decision(acquire=True)
    if holder and holder_alive:
        parsed = Operation.parse_identity(holder)
        who = f"{parsed[0]} {parsed[1]}/{parsed[2]}" if parsed else holder
        return Decision(acquire=False, reason=Reason.DATABASE_BUSY, blocker=who, position=position)
    if ahead:
        return Decision(acquire=False, reason=Reason.QUEUED_BEHIND, blocker=ahead[0].display, position=position)
    return Decision(acquire=True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseLock:
    """The Kubernetes side of the lock: read, take, reclaim and release one Lease per database."""

    def __init__(self, coordination: Any, namespace: str) -> None:
        self.api = coordination
        self.namespace = namespace

    def holder(self, db_key: str) -> tuple[str | None, Any]:
        try:
            lease = self.api.read_namespaced_lease(naming.lock_name(db_key), self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None, None
            raise
        return (lease.spec.holder_identity or None), lease

    def try_take(self, db_key: str, me: Operation, *, identity_note: str, current: Any) -> bool:
        """Creates the Lease, or takes over `current` (free or stale). False if someone beat us."""
        metadata: dict[str, Any] = {
            "name": naming.lock_name(db_key),
            "labels": {"app.kubernetes.io/managed-by": "mysql-backup-operator"},
            "annotations": {"mysqlbackup.dev/database": identity_note},
        }
        body = {
            "metadata": metadata,
            "spec": {"holderIdentity": me.identity, "acquireTime": _now(), "renewTime": _now()},
        }
        try:
            if current is None:
                self.api.create_namespaced_lease(self.namespace, body)
            else:
                metadata["resourceVersion"] = current.metadata.resource_version
                self.api.replace_namespaced_lease(naming.lock_name(db_key), self.namespace, body)
        except ApiException as e:
            if e.status in (409, 404):
                return False
            raise
        return True

    def release(self, db_key: str, me: Operation) -> None:
        holder, lease = self.holder(db_key)
        if holder != me.identity:
            return
        try:
            self.api.delete_namespaced_lease(
                naming.lock_name(db_key),
                self.namespace,
                body={"preconditions": {"resourceVersion": lease.metadata.resource_version}},
            )
        except ApiException as e:
            if e.status not in (404, 409):
                raise


def acquire(
    lock: LeaseLock,
    *,
    db_key: str,
    identity_note: str,
    me: Operation,
    waiting: Sequence[Operation],
    is_alive: Callable[[str], bool],
    confirm: Callable[[], Sequence[Operation]] | None = None,
) -> Decision:
    """Takes the lock if `decide` lets `me` have it; otherwise says why not (the Queued status).

    `waiting` is the queue as the watch-fed cache knows it, good enough to *stay* queued. But an
    operation created a moment before `me` may not be in the cache yet (its watch event, or its
    database label, is still on the way), so before a free lock is actually taken `confirm` reads
    the queue live and the decision is made again on that: a LIST per acquisition, never per
    queued pass. The cache-based decision found nobody ahead of `me`, so the live queue alone
    decides."""
    holder, lease = lock.holder(db_key)
    alive = bool(holder) and holder != me.identity and is_alive(holder or "")
    d = decide(me=me, holder=holder, holder_alive=alive, waiting=waiting)
    if not d.acquire or holder == me.identity:
        return d
    if confirm is not None:
        d = decide(me=me, holder=holder, holder_alive=alive, waiting=confirm())
        if not d.acquire:
            return d
    if lock.try_take(db_key, me, identity_note=identity_note, current=lease):
        return d
    holder, _ = lock.holder(db_key)
    return Decision(acquire=False, reason=Reason.DATABASE_BUSY, blocker=holder or "another operation", position=1)
