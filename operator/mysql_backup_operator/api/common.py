"""What the three CRD models share: spec errors, names, times, conditions, the status of an
operation (Backup and Restore) with its shared transitions, and the frame of a CRD."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import COND_QUEUED, COND_READY, GROUP, VERSION, Reason
from .schema import Schema, dataclass_schema, to_wire, wire

Status = dict[str, Any]
# Names a database may have (the CRDs use the same pattern), and the schemas never backed up.
DB_NAME_PATTERN = r"^[A-Za-z0-9_$-]+$"
DB_NAME = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")
SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")


class SpecError(ValueError):
    """The spec cannot be acted on. The message is shown to the user as-is."""


def required(d: Mapping[str, Any], key: str, where: str) -> Any:
    v = d.get(key)
    if v in (None, ""):
        raise SpecError(f"{where}.{key} is required")
    return v


def user_database(name: str) -> bool:
    return bool(DB_NAME.match(name)) and name.lower() not in SYSTEM_SCHEMAS


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Condition:
    type: str = wire(default="", required=True)
    status: str = wire(default="Unknown", required=True, extra={"enum": ["True", "False", "Unknown"]})
    reason: str | None = wire()
    message: str | None = wire()
    last_transition_time: str | None = wire(format="date-time")
    observed_generation: int | None = wire(format="int64")


CONDITIONS_EXTRA = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Upserts one condition, keeping lastTransitionTime when the status did not change."""
    out = [dict(c) for c in conditions if c.get("type") != type_]
    old = next((c for c in conditions if c.get("type") == type_), None)
    value = "True" if status else "False"
    changed = old is None or old.get("status") != value
    out.append(
        {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": iso(now) if changed or old is None else old.get("lastTransitionTime", iso(now)),
        }
    )
    return sorted(out, key=lambda c: str(c["type"]))


@dataclass(frozen=True)
class OperationStatus:
    """The status fields every operation (Backup, Restore) has, and the transitions they share.

    A transition reads the current status (`self`) and returns the patch to send: only the keys
    that change, None for a key to remove. Each subclass narrows `phase` to its own enum."""

    phase: str | None = wire()
    reason: str | None = wire()
    message: str | None = wire()
    observed_generation: int | None = wire(format="int64")
    job_name: str | None = wire()
    queue_position: int | None = wire()
    started_at: str | None = wire(format="date-time")
    completed_at: str | None = wire(format="date-time")
    duration_seconds: float | None = wire()
    conditions: tuple[Condition, ...] = wire(default=(), extra=CONDITIONS_EXTRA)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def _wire_conditions(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = to_wire(self.conditions)
        return out

    def _started(self, now: dt.datetime) -> dt.datetime:
        return parse_iso(self.started_at) if self.started_at else now

    def _dequeued(self, generation: int, now: dt.datetime, message: str) -> list[dict[str, Any]]:
        return set_condition(
            self._wire_conditions(),
            type_=COND_QUEUED,
            status=False,
            reason="LockAcquired",
            message=message,
            generation=generation,
            now=now,
        )

    def pending(self, *, message: str, generation: int) -> Status | None:
        """Pending with a message (waiting for something); None when nothing visible changed."""
        if self.phase == "Pending" and self.message == message:
            return None
        return {"phase": "Pending", "message": message, "observedGeneration": generation}

    def queued(self, *, holder: str, position: int, reason: Reason, generation: int, now: dt.datetime) -> Status | None:
        """Pending with a visible Queued condition; None when nothing visible changed (no patch needed)."""
        message = f"waiting for {holder} to finish" if reason == Reason.DATABASE_BUSY else f"queued behind {holder}"
        old = self.condition(COND_QUEUED)
        if (
            old is not None
            and old.status == "True"
            and old.message == message
            and self.queue_position == position
            and self.phase
        ):
            return None
        return {
            "phase": self.phase or "Pending",
            "queuePosition": position,
            "reason": str(reason),
            "message": message,
            "observedGeneration": generation,
            "conditions": set_condition(
                self._wire_conditions(),
                type_=COND_QUEUED,
                status=True,
                reason=str(reason),
                message=message,
                generation=generation,
                now=now,
            ),
        }

    def failed(self, *, reason: Reason | str, message: str, generation: int, now: dt.datetime) -> Status:
        """Terminal failure; the same shape for Backup and Restore."""
        st: Status = {
            "phase": "Failed",
            "reason": str(reason),
            "message": message,
            "queuePosition": None,
            "completedAt": iso(now),
            "observedGeneration": generation,
            "conditions": set_condition(
                self._dequeued(generation, now, "finished"),
                type_=COND_READY,
                status=False,
                reason=str(reason),
                message=message,
                generation=generation,
                now=now,
            ),
        }
        if self.started_at:
            st["durationSeconds"] = round((now - parse_iso(self.started_at)).total_seconds(), 1)
        return st


@dataclass(frozen=True)
class CRD:
    """The frame of one CustomResourceDefinition; the schemas come from the kind's model."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    printer_columns: tuple[Mapping[str, Any], ...]

    def render(self, spec: Schema, status: type[Any], *, spec_required: bool = True) -> dict[str, Any]:
        root: Schema = {"type": "object", "description": self.description}
        if spec_required:
            root["required"] = ["spec"]
        root["properties"] = {"spec": spec, "status": dataclass_schema(status)}
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{self.plural}.{GROUP}"},
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {
                    "kind": self.kind,
                    "listKind": f"{self.kind}List",
                    "plural": self.plural,
                    "singular": self.kind.lower(),
                    "shortNames": list(self.short_names),
                    "categories": ["mysqlbackup"],
                },
                "versions": [
                    {
                        "name": VERSION,
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "additionalPrinterColumns": [dict(c) for c in self.printer_columns],
                        "schema": {"openAPIV3Schema": root},
                    }
                ],
            },
        }


def column(
    name: str, type_: str, json_path: str, *, priority: int | None = None, fmt: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": type_}
    if fmt:
        out["format"] = fmt
    if priority is not None:
        out["priority"] = priority
    out["jsonPath"] = json_path
    return out
