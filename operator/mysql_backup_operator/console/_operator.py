"""The one place the console imports from the operator, so a restructuring only re-points these lines."""

from __future__ import annotations

from ..api import API_VERSION, BACKUPS, GROUP, LABEL_DB_KEY, LABEL_POLICY, POLICIES, RESTORES, VERSION, Reason
from ..api.backup import BackupPhase, Trigger
from ..api.restore import RestorePhase
from ..k8s.kube import Kube, user_config
from ..naming import lock_name, manual_backup_name

__all__ = [
    "API_VERSION",
    "BACKUPS",
    "GROUP",
    "LABEL_DB_KEY",
    "LABEL_POLICY",
    "POLICIES",
    "RESTORES",
    "VERSION",
    "BackupPhase",
    "Kube",
    "Reason",
    "RestorePhase",
    "Trigger",
    "lock_name",
    "manual_backup_name",
    "user_config",
]
