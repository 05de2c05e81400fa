"""What the Backup and Restore controllers share: both are operations on one database under its
Lease lock, driven by one Job whose agent reports a JSON result.

`Context` holds the services every controller uses (the Kubernetes door, the lock, the watch-fed
cache, the wake-up hook, the object store factory). `OperationController` holds the steps the two
state machines have in common: the preamble (defaults, terminal check, spec parsing), taking the
lock or queueing, labels, following the Job and turning its result into a failure reason. The
kind-specific steps live in controllers/backup.py and controllers/restore.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .. import jobs, metrics, naming
from ..api import ANNOTATION_IMPORTED_FROM, API_VERSION, BACKUPS, COND_DATA_MISSING, LABEL_DB_KEY, RESTORES, Reason
from ..api.backup import BackupPhase, Trigger
from ..api.common import OperationStatus, SpecError
from ..api.policy import PolicySpec, parse_policy
from ..api.restore import RestorePhase
from ..backends import Target
from ..k8s.kube import Kube
from ..k8s.locking import LeaseLock, Operation, acquire
from ..objectstore import Location, StorageError, Store
from .cache import Cache, ObjectKey, db_key_of

LOG = logging.getLogger(__name__)
AGENT_REASONS = {r.value for r in Reason}
S = TypeVar("S")
Wake = Callable[[ObjectKey], None]


@dataclass(frozen=True)
class Settings:
    lock_namespace: str
    agent_image: str
    # The namespaces the operator watches (MBO_WATCH_NAMESPACES); empty: the whole cluster. Its
    # own LISTs stay inside them: with `watchNamespaces` its RBAC allows no cluster-wide LIST.
    watch_namespaces: tuple[str, ...] = ()
    # A Backup whose policy does not exist yet waits this long (GitOps may apply it first).
    missing_policy_grace_seconds: int = 60


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def scrub(text: str, secrets: list[str]) -> str:
    """Removes secret values (and password-looking assignments) from text shown to users."""
    for s in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
        text = text.replace(s, "****")
    return re.sub(r"(?i)(password|secret|token)(\s*[=:]\s*)\S+", r"\1\2****", text)


def phase_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "Pending")


def operation(obj: Mapping[str, Any]) -> Operation:
    m = obj["metadata"]
    return Operation(
        created=m.get("creationTimestamp") or "",
        kind=obj["kind"],
        namespace=m["namespace"],
        name=m["name"],
        uid=m["uid"],
    )


def queue_candidate(kind: str, body: Mapping[str, Any]) -> bool:
    """Whether a Backup or Restore is, or is about to be, in the queue for its database's lock:
    Pending and not being deleted; not a pre-restore Backup (it runs under its Restore's lock, it
    never queues) and not one imported from storage (its status is written by the importer)."""
    m = body.get("metadata") or {}
    if phase_of(body) != "Pending" or m.get("deletionTimestamp"):
        return False
    if (m.get("annotations") or {}).get(ANNOTATION_IMPORTED_FROM):
        return False
    return not (kind == "Backup" and (body.get("spec") or {}).get("trigger") == Trigger.PRE_RESTORE)


def waiters(db_key: str, seen: Iterable[tuple[str, Mapping[str, Any], str | None]]) -> list[Operation]:
    """The operations queued for `db_key`'s lock among `(kind, body, database it is for)` triples
    from live LISTs, each once: an object labelled between two LISTs can show up in both."""
    found: dict[str, Operation] = {}
    for kind, body, key in seen:
        if key == db_key and queue_candidate(kind, body):
            op = operation({**body, "kind": kind})
            found[op.uid] = op
    return sorted(found.values())


def restore_target_ready(backup: Mapping[str, Any] | None) -> bool:
    """A Restore of this Backup asks for the lock at its next step (else it waits or fails first)."""
    if backup is None or phase_of(backup) != BackupPhase.COMPLETED:
        return False
    conditions = (backup.get("status") or {}).get("conditions") or []
    return not any(c.get("type") == COND_DATA_MISSING and c.get("status") == "True" for c in conditions)


def _no_wake(_: ObjectKey) -> None:
    return None


class Context:
    """The services shared by every controller of one operator process.

    `cache` is the watch-fed view (policies, the queue in front of each database lock); `wake`
    puts an object key (kind, namespace, name) on the work queue, used to hand a freed lock to the
    next operation at once instead of waiting for a safety-net pass.
    """

    def __init__(self, kube: Kube, settings: Settings, *, cache: Cache | None = None, wake: Wake = _no_wake) -> None:
        self.kube = kube
        self.settings = settings
        self.lock = LeaseLock(kube.coordination, settings.lock_namespace)
        self.cache = cache or Cache()
        self.wake = wake

    def release(self, db_key: str, obj: Mapping[str, Any]) -> None:
        """Releases our lock and wakes whoever waits for the database (first in line takes it)."""
        self.lock.release(db_key, operation(obj))
        self.wake_waiting(db_key)

    def wake_waiting(self, db_key: str) -> None:
        for row in sorted(self.cache.ops_for_database(db_key), key=lambda r: r.op):
            if row.waiting:
                self.wake((row.op.kind, row.op.namespace, row.op.name))

    def policy(self, namespace: str, name: str) -> tuple[dict[str, Any] | None, PolicySpec | None]:
        # The watch-fed cache first; a policy created a moment ago may not be there yet.
        raw = self.cache.policy(namespace, name) or self.kube.get_policy(namespace, name)
        if raw is None:
            return None, None
        return raw, parse_policy(
            name=name, namespace=namespace, spec=raw.get("spec") or {}, default_image=self.settings.agent_image
        )

    def missing_secrets(self, namespace: str, policy: PolicySpec) -> tuple[str | None, list[str]]:
        """Checks the Secrets a Job needs before launching it; returns (problem, secret values to scrub)."""
        values: list[str] = []
        refs = [
            (policy.database.password.name, policy.database.password.key),
            *((e.secret, e.key) for e in Target.of(policy).secret_env),
        ]
        refs += [(r.name, r.key) for _, r in jobs.extra_secret_refs(policy)]
        cache: dict[str, dict[str, str] | None] = {}
        for name, key in refs:
            if name not in cache:
                cache[name] = self.kube.secret_values(namespace, name)
            data = cache[name]
            if data is None:
                return f'Secret "{name}" not found in namespace {namespace}', values
            if key not in data:
                return f'Secret "{name}" has no key "{key}"', values
            values.append(data[key])
        return None, values

    def store(self, namespace: str, loc: Location) -> Store:
        """A client for a Backup's bucket, with the credentials from its Secret."""
        # No credentials Secret (Azure/GCS workload identity): the SDK finds the pod's identity.
        secret = self.kube.secret_values(namespace, loc.secret) if loc.secret else {}
        if secret is None:
            raise StorageError(
                f'credentials Secret "{loc.secret}" not found in namespace {namespace}', no_credentials=True
            )
        ca = None
        if loc.ca_secret:
            ca_values = self.kube.secret_values(namespace, loc.ca_secret) or {}
            ca = ca_values.get(loc.ca_key or "ca.crt")
        return Store(loc, secret, ca)


@dataclass(frozen=True)
class Step:
    """What the preamble established about one object for the rest of a reconcile step."""

    phase: str
    namespace: str
    name: str
    generation: int


@dataclass(frozen=True)
class JobEnd:
    """How a finished Job ended: its outcome ("complete"/"failed"), the Job's reason, the agent's result."""

    outcome: str
    job_reason: str | None
    result: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return self.outcome == "complete" and bool(self.result.get("ok"))


class OperationController:
    """The steps the Backup and Restore state machines share. Each call looks at the object's
    phase and does the one next step; every step is idempotent (deterministic names, "already
    exists" is done, the lock is re-entrant), so an operator killed at any point picks up where
    it stopped without running anything twice. A terminal phase is never left."""

    kind: ClassVar[str]
    plural: ClassVar[str]
    what: ClassVar[str]  # "backup" or "restore", in messages

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.kube = ctx.kube

    # ---------------------------------------------------------------- per-kind hooks

    def _terminal(self, phase: str) -> bool:
        raise NotImplementedError

    def _status(self, obj: Mapping[str, Any]) -> OperationStatus:
        """The object's current status, typed (its transitions return the patches to send)."""
        raise NotImplementedError

    def _count_failure(self, obj: Mapping[str, Any], reason: str) -> None:
        raise NotImplementedError

    def _agent_failure(self) -> Reason:
        """The reason when the agent ran but could not classify its failure."""
        raise NotImplementedError

    # ---------------------------------------------------------------- shared steps

    def _begin(self, obj: dict[str, Any], parse: Callable[[Mapping[str, Any]], S]) -> tuple[Step, S] | None:
        """The preamble of every step: defaults, the terminal check, and the spec (a bad spec fails
        the object with InvalidSpec). None means there is nothing to do."""
        obj.setdefault("status", {})
        obj.setdefault("kind", self.kind)
        obj.setdefault("apiVersion", API_VERSION)
        phase = phase_of(obj)
        if self._terminal(phase):
            return None
        m = obj["metadata"]
        step = Step(phase=phase, namespace=m["namespace"], name=m["name"], generation=int(m.get("generation") or 1))
        try:
            spec = parse(obj.get("spec") or {})
        except SpecError as e:
            self._fail(obj, Reason.INVALID_SPEC, str(e), release=None)
            return None
        return step, spec

    def _set(self, obj: dict[str, Any], status: Mapping[str, Any] | None) -> None:
        if status is None:
            return
        m = obj["metadata"]
        self.kube.patch_status(self.plural, m["namespace"], m["name"], status)
        old_phase = (obj.get("status") or {}).get("phase") or "Pending"
        if status.get("phase") and status["phase"] != old_phase:
            LOG.info("%s %s/%s: %s -> %s", obj.get("kind"), m["namespace"], m["name"], old_phase, status["phase"])
        # Keep the in-memory copy current so later steps in this same call see the new phase.
        st = obj.setdefault("status", {})
        for k, v in status.items():
            if v is None:
                st.pop(k, None)
            else:
                st[k] = v

    def _fail(self, obj: dict[str, Any], reason: Reason | str, message: str, *, release: str | None) -> None:
        gen = int(obj["metadata"].get("generation") or 1)
        self._set(obj, self._status(obj).failed(reason=reason, message=message, generation=gen, now=utcnow()))
        self.kube.event(obj, warning=True, reason=str(reason), message=message)
        self._count_failure(obj, str(reason))
        m = obj["metadata"]
        LOG.warning("%s %s/%s failed: %s: %s", obj["kind"], m["namespace"], m["name"], reason, message)
        if release:
            self.ctx.release(release, obj)

    def _policy_or_fail(self, obj: dict[str, Any], policy_name: str) -> tuple[bool, PolicySpec | None]:
        """The policy an operation runs under; (False, None) when its spec is invalid (the object failed)."""
        try:
            _, policy = self.ctx.policy(obj["metadata"]["namespace"], policy_name)
        except SpecError as e:
            self._fail(obj, Reason.INVALID_SPEC, f"BackupPolicy {policy_name}: {e}", release=None)
            return False, None
        return True, policy

    def _is_alive(self, identity: str) -> bool:
        """A lock holder is alive while its object exists with the same uid and is not terminal."""
        parsed = Operation.parse_identity(identity)
        if not parsed:
            return False
        kind, ns, name, uid = parsed
        obj = self.kube.get_backup(ns, name) if kind == "Backup" else self.kube.get_restore(ns, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            return False
        phase = phase_of(obj)
        terminal = BackupPhase(phase).terminal if kind == "Backup" else RestorePhase(phase).terminal
        return not terminal

    def _waiting(self, db_key: str) -> list[Operation]:
        """The queue in front of a database lock, from the watch-fed cache (no LIST per attempt).
        Enough to stay queued; taking a free lock confirms with `_live_waiting` first."""
        return [row.op for row in self.ctx.cache.ops_for_database(db_key) if row.waiting]

    def _live_waiting(self, db_key: str) -> list[Operation]:
        """The queue in front of a database lock, read live when about to take it.

        Operations created a few milliseconds apart are reconciled by parallel workers, so the
        earlier one may not be in the cache yet, nor even carry its database label (it gets it at
        its first step). So per kind two LISTs: objects without the label (not reconciled yet;
        which database each is for comes from its policy, or a Restore's Backup), then those with
        this database's label. That order leaves no gap: an object labelled in between was seen
        unlabelled by the first LIST. Four LISTs per acquisition, none while queued."""
        seen: list[tuple[str, Mapping[str, Any], str | None]] = []
        for plural, kind in ((BACKUPS, "Backup"), (RESTORES, "Restore")):
            scope = self.ctx.settings.watch_namespaces
            for body in self.kube.list_all(plural, f"!{LABEL_DB_KEY}", namespaces=scope):
                if queue_candidate(kind, body):
                    seen.append((kind, body, self._database_of(kind, body)))
            labelled = self.kube.list_all(plural, f"{LABEL_DB_KEY}={db_key}", namespaces=scope)
            seen += [(kind, body, db_key) for body in labelled]
        return waiters(db_key, seen)

    def _database_of(self, kind: str, body: Mapping[str, Any]) -> str | None:
        """The database key an operation not reconciled yet will queue for; None if it will not
        queue soon (a missing or invalid policy, a Restore waiting for its Backup to complete: a
        waiter that cannot take the lock must not hold back the others)."""
        ns = str((body.get("metadata") or {}).get("namespace") or "")
        spec = body.get("spec") or {}
        if kind == "Restore":
            name = str((spec.get("backupRef") or {}).get("name") or "")
            backup = self.kube.get_backup(ns, name) if name else None  # a point-in-time Restore counts once labelled
            if backup is None or not restore_target_ready(backup):
                return None
            if key := db_key_of(backup):
                return key
            spec = backup.get("spec") or {}
        policy_name = str((spec.get("policyRef") or {}).get("name") or "")
        if not policy_name:
            return None
        try:
            _, policy = self.ctx.policy(ns, policy_name)
        except SpecError:
            return None
        return naming.database_key(policy.database.identity) if policy else None

    def _take_lock(self, obj: dict[str, Any], db_key: str, identity: str) -> bool:
        gen = int(obj["metadata"].get("generation") or 1)
        waiting = self._waiting(db_key)
        metrics.queue_length(identity, len(waiting))
        d = acquire(
            self.ctx.lock,
            db_key=db_key,
            identity_note=identity,
            me=operation(obj),
            waiting=waiting,
            is_alive=self._is_alive,
            confirm=lambda: self._live_waiting(db_key),
        )
        if d.acquire:
            return True
        assert d.reason is not None
        patch = self._status(obj).queued(
            holder=d.blocker,
            position=d.position,
            reason=d.reason,
            generation=gen,
            now=utcnow(),
        )
        if patch is not None:
            first = not (obj.get("status") or {}).get("queuePosition")
            self._set(obj, patch)
            if first:
                self.kube.event(obj, warning=False, reason="Queued", message=patch["message"])
        return False

    def _ensure_labels(self, obj: dict[str, Any], labels: Mapping[str, str], *, finalizer: str | None = None) -> None:
        """Labels (and, for Backups, the data finalizer) in one patch, only when something is missing."""
        m = obj["metadata"]
        current = m.get("labels") or {}
        finalizers = list(m.get("finalizers") or [])
        need_finalizer = finalizer is not None and finalizer not in finalizers and not m.get("deletionTimestamp")
        if all(current.get(k) == v for k, v in labels.items()) and not need_finalizer:
            return
        self.kube.patch_metadata(
            self.plural,
            m["namespace"],
            m["name"],
            resource_version=m.get("resourceVersion") if need_finalizer else None,
            labels=labels,
            finalizers=[*finalizers, finalizer] if need_finalizer and finalizer else None,
        )
        m.setdefault("labels", {}).update(labels)
        if need_finalizer and finalizer:
            m["finalizers"] = [*finalizers, finalizer]

    def _job_end(self, namespace: str, job_name: str) -> JobEnd | None:
        """The Job's end, or None while it runs. Raises LookupError when the Job is gone. The pods are
        read even while the Job says it runs: a succeeded agent pod ends it a second sooner
        (`jobs.agent_succeeded`), and it costs one LIST per step of a running operation."""
        job = self.kube.get_job(namespace, job_name)
        if job is None:
            raise LookupError(job_name)
        pods = self.kube.job_pods(namespace, job_name)
        outcome, job_reason = jobs.job_end_outcome(job, pods)
        if outcome == "running":
            return None
        return JobEnd(outcome=outcome, job_reason=job_reason, result=jobs.agent_result(pods) or {})

    def _fail_from_job(self, obj: dict[str, Any], policy: PolicySpec, end: JobEnd, *, release: str | None) -> None:
        """Fails the object with the agent's classified reason, its message scrubbed of secrets."""
        _, secret_values = self.ctx.missing_secrets(obj["metadata"]["namespace"], policy)
        reason, message = self._failure_from(end.result, end.job_reason, secret_values)
        self._fail(obj, reason, message, release=release)

    def _failure_from(
        self, result: Mapping[str, Any], job_reason: str | None, secret_values: list[str]
    ) -> tuple[str, str]:
        what = self.what
        if job_reason == "DeadlineExceeded":
            return Reason.TIMEOUT, f"{what} Job exceeded its activeDeadlineSeconds and was stopped"
        reason = result.get("reason")
        fallback = (
            f"{what} Job failed ({job_reason})"
            if result
            else f"{what} Job failed ({job_reason}) and no pod is left to say why: was it deleted or evicted?"
        )
        message = scrub(str(result.get("message") or fallback), secret_values)
        if reason not in AGENT_REASONS:
            # No classified result: either the agent never started (no result, or the runtime's
            # StartError code 128) or it crashed before it could classify.
            agent_ran = bool(result) and result.get("exitCode") != 128
            reason = self._agent_failure() if agent_ran else Reason.JOB_FAILED
        return str(reason), message
