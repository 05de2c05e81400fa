"""The mysqlbackup.dev API: what all three CRDs and the agent share (group, kinds, labels,
failure reasons, compression, condition types).

One module per CRD holds that kind's typed model, spec and status, with its defaults, enums,
allow-lists, status transitions and schema: `api.policy` (BackupPolicy), `api.backup` (Backup),
`api.restore` (Restore). `hack/gen-crds.py` renders crds/*.yaml from them (docs/design-typed-api.md).
"""

from __future__ import annotations

from enum import StrEnum

GROUP = "mysqlbackup.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

POLICIES = "backuppolicies"
BACKUPS = "backups"
RESTORES = "restores"

# Labels and annotations the operator writes. All live under our group so they never collide.
LABEL_POLICY = f"{GROUP}/policy"
LABEL_DB_KEY = f"{GROUP}/database-key"
LABEL_TRIGGER = f"{GROUP}/trigger"
LABEL_RESTORE = f"{GROUP}/restore"
LABEL_RESTORE_UID = f"{GROUP}/restore-uid"
LABEL_BACKUP = f"{GROUP}/backup"
LABEL_RESTORE_JOB = f"{GROUP}/restore-job"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "mysql-backup-operator"
ANNOTATION_KEEP = f"{GROUP}/keep"
# On agent pods: "Backup/<name>" or "Restore/<name>", the operation the pod works for (jobs.py).
ANNOTATION_OPERATION = f"{GROUP}/operation"
LABEL_IMPORTED = f"{GROUP}/imported"
ANNOTATION_IMPORTED_FROM = f"{GROUP}/imported-from"


class Compression(StrEnum):
    ZSTD = "zstd"
    GZIP = "gzip"
    NONE = "none"

    @property
    def extension(self) -> str:
        return {"zstd": ".sql.zst", "gzip": ".sql.gz", "none": ".sql"}[self.value]


class Reason(StrEnum):
    """Every failure reason a user can see in status, events and metrics (docs/troubleshooting.md)."""

    # Reported by the agent.
    DATABASE_UNAVAILABLE = "DatabaseUnavailable"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    INSUFFICIENT_STORAGE = "InsufficientStorage"
    STORAGE_UNAVAILABLE = "StorageUnavailable"
    STORAGE_ACCESS_DENIED = "StorageAccessDenied"
    TIMEOUT = "Timeout"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    BACKUP_NOT_FOUND = "BackupNotFound"
    DUMP_FAILED = "DumpFailed"
    RESTORE_FAILED = "RestoreFailed"
    INTERRUPTED = "Interrupted"
    ENCRYPTION_KEY_MISSING = "EncryptionKeyMissing"
    ENCRYPTION_KEY_INVALID = "EncryptionKeyInvalid"
    DECRYPTION_FAILED = "DecryptionFailed"
    REPLAY_INCOMPLETE = "ReplayIncomplete"  # binlog replay did not reach the planned last GTID
    # Decided by the operator.
    POLICY_NOT_FOUND = "PolicyNotFound"
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"
    BACKUP_NOT_COMPLETED = "BackupNotCompleted"
    DATA_MISSING = "DataMissing"
    PRE_RESTORE_BACKUP_FAILED = "PreRestoreBackupFailed"
    JOB_FAILED = "JobFailed"
    JOB_DELETED = "JobDeleted"
    TARGET_NOT_RECOVERABLE = "TargetNotRecoverable"  # a point-in-time target outside every window
    # Non-failure condition reasons.
    DATABASE_BUSY = "DatabaseBusy"
    QUEUED_BEHIND = "QueuedBehindEarlierOperation"


# Condition types.
COND_QUEUED = "Queued"
COND_READY = "Ready"
COND_DATA_MISSING = "DataMissing"
COND_BINLOG_GAP = "BinlogGap"  # a policy's archived binlogs have a gap (purged, server changed)
