"""Pure shaping of Kubernetes objects into what the console's pages show.

Every function takes plain dicts (and `now` where time matters) so the listing, filtering,
queue and permission-message logic is unit-tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._operator import LABEL_DB_KEY, BackupPhase, RestorePhase, Trigger

Obj = Mapping[str, Any]


def parse_time(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    d = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=dt.UTC)


def _condition(obj: Obj, type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def policy_row(p: Obj) -> dict[str, Any]:
    """One line of the policies page: schedule, last success, next run and the BackupOverdue state."""
    m, spec, st = p["metadata"], p.get("spec") or {}, p.get("status") or {}
    overdue = _condition(p, "BackupOverdue")
    ready = _condition(p, "Ready")
    db = spec.get("database") or {}
    return {
        "name": m["name"],
        "schedule": spec.get("schedule"),
        "suspend": bool(spec.get("suspend")),
        "databases": list(db.get("databases") or []),
        "host": db.get("host"),
        "lastSuccessfulBackup": st.get("lastSuccessfulBackup"),
        "lastSuccessfulTime": st.get("lastSuccessfulTime"),
        "lastFailedBackup": st.get("lastFailedBackup"),
        "lastFailureReason": st.get("lastFailureReason"),
        "nextScheduleTime": st.get("nextScheduleTime"),
        "backupCount": st.get("backupCount", 0),
        "storedBytes": st.get("storedBytes", 0),
        "overdue": None if overdue is None else overdue.get("status") == "True",
        "overdueMessage": (overdue or {}).get("message"),
        "ready": None if ready is None else ready.get("status") == "True",
        "readyMessage": (ready or {}).get("message"),
    }


def _duration(st: Mapping[str, Any]) -> float | None:
    if st.get("durationSeconds") is not None:
        return float(st["durationSeconds"])
    start, end = parse_time(st.get("startedAt")), parse_time(st.get("completedAt"))
    return (end - start).total_seconds() if start and end else None


def backup_row(b: Obj) -> dict[str, Any]:
    """The fields the backups table shows; the status is copied, never recomputed."""
    m, spec, st = b["metadata"], b.get("spec") or {}, b.get("status") or {}
    return {
        "name": m["name"],
        "created": m.get("creationTimestamp"),
        "policy": (spec.get("policyRef") or {}).get("name"),
        "trigger": spec.get("trigger") or str(Trigger.MANUAL),
        "description": spec.get("description"),
        "deletionPolicy": spec.get("deletionPolicy") or "Delete",
        "phase": st.get("phase") or str(BackupPhase.PENDING),
        "reason": st.get("reason"),
        "message": st.get("message"),
        "sizeBytes": st.get("sizeBytes"),
        "storedBytes": st.get("storedBytes"),
        "tables": st.get("tableCount", st.get("tables")),
        "compression": st.get("compression"),
        "databases": st.get("databases"),
        "sha256": st.get("sha256"),
        "location": st.get("location"),
        "startedAt": st.get("startedAt"),
        "completedAt": st.get("completedAt"),
        "durationSeconds": _duration(st),
        "jobName": st.get("jobName"),
        "queuePosition": st.get("queuePosition"),
        "deleting": bool(m.get("deletionTimestamp")),
    }


def restore_row(r: Obj) -> dict[str, Any]:
    m, spec, st = r["metadata"], r.get("spec") or {}, r.get("status") or {}
    return {
        "name": m["name"],
        "created": m.get("creationTimestamp"),
        "backup": (spec.get("backupRef") or {}).get("name"),
        "databases": spec.get("databases"),
        "target": spec.get("target"),
        "phase": st.get("phase") or str(RestorePhase.PENDING),
        "reason": st.get("reason"),
        "message": st.get("message"),
        "preRestoreBackup": st.get("preRestoreBackup"),
        "jobName": st.get("jobName"),
        "startedAt": st.get("startedAt"),
        "completedAt": st.get("completedAt"),
        "queuePosition": st.get("queuePosition"),
    }


@dataclass(frozen=True)
class BackupFilter:
    """The backups page's filters; None means "any". Dates compare with creationTimestamp."""

    policy: str | None = None
    trigger: str | None = None
    phase: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @staticmethod
    def from_query(q: Mapping[str, str]) -> BackupFilter:
        def date(key: str, end_of_day: bool) -> dt.datetime | None:
            raw = q.get(key) or None
            if raw is None:
                return None
            try:
                d = parse_time(raw)
            except ValueError:
                raise ValueError(f"{key}: not a date: {raw!r} (use YYYY-MM-DD or an ISO 8601 time)") from None
            if d is not None and end_of_day and len(raw) == 10:
                d += dt.timedelta(days=1) - dt.timedelta(microseconds=1)
            return d

        return BackupFilter(
            policy=q.get("policy") or None,
            trigger=q.get("trigger") or None,
            phase=q.get("phase") or None,
            since=date("since", False),
            until=date("until", True),
        )

    def keep(self, b: Obj) -> bool:
        row = backup_row(b)
        created = parse_time(row["created"])
        return (
            (self.policy is None or row["policy"] == self.policy)
            and (self.trigger is None or row["trigger"] == self.trigger)
            and (self.phase is None or str(row["phase"]).lower() == self.phase.lower())
            and (self.since is None or (created is not None and created >= self.since))
            and (self.until is None or (created is not None and created <= self.until))
        )


def backup_page(items: Iterable[Obj], flt: BackupFilter, *, page: int, limit: int) -> dict[str, Any]:
    """Newest first (ties by name), filtered, then one page. Out-of-range pages are clamped."""
    if limit <= 0 or page <= 0:
        raise ValueError("page and limit must be positive")
    kept = sorted(
        (b for b in items if flt.keep(b)),
        key=lambda b: (b["metadata"].get("creationTimestamp") or "", b["metadata"]["name"]),
        reverse=True,
    )
    pages = max(1, (len(kept) + limit - 1) // limit)
    page = min(page, pages)
    return {
        "items": [backup_row(b) for b in kept[(page - 1) * limit : page * limit]],
        "total": len(kept),
        "page": page,
        "pages": pages,
        "limit": limit,
    }


def _identity_display(identity: str) -> str:
    parts = identity.split("/")
    return f"{parts[0]} {parts[1]}/{parts[2]}" if len(parts) == 4 else identity


def queue(
    backups: Iterable[Obj], restores: Iterable[Obj], *, leases: Mapping[str, str | None] | None = None
) -> list[dict[str, Any]]:
    """Per database (label database-key): who holds the lock and who waits, in queue order.

    The holder comes from the Lease when the user may read it (`leases`: key -> holderIdentity),
    otherwise from the operations' own status: the one past Pending holds the lock. Waiting
    operations are Pending ones, ordered by queuePosition then creation, as the operator orders them.
    """
    groups: dict[str, dict[str, Any]] = {}
    active_ops = [("Backup", b, backup_row(b)) for b in backups] + [("Restore", r, restore_row(r)) for r in restores]
    for kind, obj, row in active_ops:
        key = (obj["metadata"].get("labels") or {}).get(LABEL_DB_KEY)
        phase = row["phase"]
        if key is None or phase in ("Completed", "Failed"):
            continue
        g = groups.setdefault(
            key, {"database": key, "holder": None, "holderSource": None, "waiting": [], "policies": set()}
        )
        if kind == "Backup" and row["policy"]:
            g["policies"].add(row["policy"])
        entry = {"kind": kind, "name": row["name"], "phase": phase, "created": row["created"]}
        if phase == "Pending":
            queued = _condition(obj, "Queued") or {}
            entry |= {
                "position": row["queuePosition"],
                "reason": row["reason"] or queued.get("reason"),
                "message": row["message"],
            }
            g["waiting"].append(entry)
        elif kind == "Backup" and row["trigger"] == str(Trigger.PRE_RESTORE):
            g.setdefault("running", []).append(entry)  # runs under its Restore's lock
        else:
            g["holder"] = f"{kind} {obj['metadata'].get('namespace', '')}/{row['name']}".replace(" /", " ")
            g["holderSource"] = "status"
            g.setdefault("running", []).append(entry)
    for key, holder in (leases or {}).items():
        if key in groups and holder:
            groups[key]["holder"] = _identity_display(holder)
            groups[key]["holderSource"] = "lease"
    out = []
    for key in sorted(groups):
        g = groups[key]
        g["waiting"].sort(key=lambda e: (e.get("position") or 1_000_000, e["created"] or "", e["name"]))
        g["policies"] = sorted(g["policies"])
        g.setdefault("running", [])
        out.append(g)
    return out


def api_error(status: int, body: str | None, reason: str | None, *, verb: str = "", what: str = "") -> dict[str, Any]:
    """The message a user sees for an API error: the server's own words, plus what a 403 means.

    Admission policies (e.g. "scheduled Backups are removed by retention") and RBAC both
    answer with a message; it is shown as is, never as a stack trace.
    """
    message = reason or "error"
    if body:
        try:
            message = json.loads(body).get("message") or message
        except (ValueError, AttributeError, TypeError):
            message = body[:500]
    out: dict[str, Any] = {"status": status, "message": message}
    if status == 403 and "denied request" not in message and "ValidatingAdmissionPolicy" not in message:
        out["title"] = "Permission denied"
        out["hint"] = (
            f"Your Kubernetes user may not {verb or 'do this'}{' ' + what if what else ''}. "
            "Ask a cluster administrator for the needed role (see docs/security.md: view, edit, admin)."
        )
    elif status in (403, 422) or "denied request" in message:
        out["title"] = "Refused by the cluster"
    elif status == 404:
        out["title"] = "Not found"
    elif status == 409:
        out["title"] = "Already exists"
    else:
        out["title"] = f"API error {status}"
    return out
