"""The BackupPolicy kind: which database to back up, where its backups go and how the Jobs run.

Spec (`PolicySpec`, parsed by `parse_policy`) with its defaults and allow-lists, status
(`PolicyStatus`: schedule, roll-up, retention and sync fields, written by controllers/policy.py),
and the schema `hack/gen-crds.py` renders into crds/backuppolicies.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import POLICIES, Compression
from .common import (
    CONDITIONS_EXTRA,
    CRD,
    DB_NAME,
    DB_NAME_PATTERN,
    SYSTEM_SCHEMAS,
    Condition,
    SpecError,
    column,
    required,
)
from .pitr import POLICY_SPEC_SCHEMA as PITR_SPEC_SCHEMA
from .pitr import PitrSpec, PitrStatus, parse_pitr
from .schema import obj, prop, rule, wire
from .storage import (
    AZURE_BLOB_SCHEMA,
    GCS_SCHEMA,
    ONE_BACKEND,
    AzureBlobSpec,
    GcsSpec,
    chosen_backend,
    parse_azure_blob,
    parse_gcs,
)
from .timezones import TIME_ZONES

DEFAULT_AGENT_IMAGE = "ghcr.io/mysql-backup-operator/mysql-backup-operator:0.1.0"
DEFAULT_PORT = 3306
DEFAULT_PASSWORD_KEY = "password"
DEFAULT_CA_KEY = "ca.crt"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCESS_KEY_ID_KEY = "AWS_ACCESS_KEY_ID"
DEFAULT_SECRET_ACCESS_KEY_KEY = "AWS_SECRET_ACCESS_KEY"
DEFAULT_COMPRESSION = Compression.ZSTD
DEFAULT_ACTIVE_DEADLINE_SECONDS = 600
DEFAULT_BACKOFF_LIMIT = 0
DEFAULT_TTL_SECONDS_AFTER_FINISHED = 86400
DEFAULT_TIME_ZONE = "UTC"
DEFAULT_SYNC_INTERVAL_SECONDS = 300
DEFAULT_KEEP_FAILED = 3
# contract.config.LAYOUT_*: the whole dump as one object, or one object per table.
LAYOUTS = ("single", "perTable")
DEFAULT_LAYOUT = LAYOUTS[0]
# backup.encryption.keySecretRef: the age identity file (docs/encryption.md).
DEFAULT_ENCRYPTION_KEY_KEY = "age.key"
# storage.s3.serverSideEncryption: S3's own encryption, passed through (contract.s3.sse_params).
SSE_MODES = ("SSE-S3", "SSE-KMS", "SSE-C")
DEFAULT_SSE_CUSTOMER_KEY_KEY = "sse-c.key"

# The extraDumpArgs allow-list: these flags as they are, and these patterns (CEL-compatible
# regular expressions: no backslash escapes). The CRD's CEL rule is rendered from the same lists.
FIXED_DUMP_ARGS = (
    "--skip-extended-insert",
    "--complete-insert",
    "--skip-comments",
    "--order-by-primary",
    "--skip-tz-utc",
    "--skip-add-locks",
    "--no-tablespaces",
)
DUMP_ARG_PATTERNS = (
    ("^--max-allowed-packet=[0-9]+[KMG]?$", "--max-allowed-packet=N"),
    ("^--net-buffer-length=[0-9]+[KM]?$", "--net-buffer-length=N"),
    ("^--default-character-set=[A-Za-z0-9_]+$", "--default-character-set=NAME"),
    ("^--ignore-table=[A-Za-z0-9_$-]+[.][A-Za-z0-9_$-]+$", "--ignore-table=DB.TABLE"),
)
_DUMP_ARG_RES = tuple(re.compile(p) for p, _ in DUMP_ARG_PATTERNS)


# What the schedule may look like (checked at apply time; schedule.py parses it).
def _cron_field(value: str) -> str:
    one = rf"(?:\*|{value}(?:-{value})?)(?:/[0-9]{{1,2}})?"
    return rf"{one}(?:,{one})*"


_CRON_VALUES = (
    r"[0-5]?[0-9]",
    r"(?:[01]?[0-9]|2[0-3])",
    r"(?:0?[1-9]|[12][0-9]|3[01])",
    r"(?:0?[1-9]|1[0-2]|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
    r"(?:[0-7]|sun|mon|tue|wed|thu|fri|sat)",
)
SCHEDULE_PATTERN = (
    r"(?i)^(?:@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    + r"\s+".join(_cron_field(v) for v in _CRON_VALUES)
    + ")$"
)


def dump_arg_allowed(arg: str) -> bool:
    return arg in FIXED_DUMP_ARGS or any(p.match(arg) for p in _DUMP_ARG_RES)


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class DatabaseSpec:
    host: str
    port: int
    user: str
    password: SecretKeyRef
    databases: tuple[str, ...]
    tls_enabled: bool = False
    tls_ca: SecretKeyRef | None = None

    @property
    def identity(self) -> str:
        """What makes two policies "the same database" for locking."""
        dbs = ",".join(sorted(self.databases)) if self.databases else "*"
        return f"{self.host.lower()}:{self.port}/{dbs}"


@dataclass(frozen=True)
class S3Spec:
    bucket: str
    prefix: str
    endpoint: str | None
    region: str
    force_path_style: bool
    credentials_secret: str
    access_key_id_key: str
    secret_access_key_key: str
    session_token_key: str | None
    ca_bundle: SecretKeyRef | None
    # storage.s3.serverSideEncryption: "SSE-S3" | "SSE-KMS" | "SSE-C", passed through to S3.
    sse_mode: str | None = None
    sse_kms_key_id: str | None = None
    sse_customer_key: SecretKeyRef | None = None


@dataclass(frozen=True)
class JobTemplate:
    image: str
    image_pull_policy: str | None
    resources: Mapping[str, Any]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    active_deadline_seconds: int
    backoff_limit: int
    ttl_seconds_after_finished: int | None


@dataclass(frozen=True)
class PolicySpec:
    name: str
    namespace: str
    database: DatabaseSpec
    s3: S3Spec | None
    compression: Compression
    compression_level: int | None
    extra_dump_args: tuple[str, ...]
    job: JobTemplate
    layout: str = DEFAULT_LAYOUT
    # backup.encryption.keySecretRef: the age identity file that encrypts (first key) and decrypts.
    encryption_key: SecretKeyRef | None = None
    azure_blob: AzureBlobSpec | None = None
    gcs: GcsSpec | None = None
    pitr: PitrSpec | None = None  # spec.pointInTimeRecovery (api/pitr.py)
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)


def _secret_key_ref(ref: Mapping[str, Any] | None, default_key: str) -> SecretKeyRef | None:
    return SecretKeyRef(str(ref["name"]), str(ref.get("key", default_key))) if ref else None


def parse_policy(
    *, name: str, namespace: str, spec: Mapping[str, Any], default_image: str = DEFAULT_AGENT_IMAGE
) -> PolicySpec:
    """The typed policy. The apiserver has already applied the schema's defaults and CEL rules;
    this still checks everything the operator relies on, so a spec that slipped past an older CRD
    fails with a clear InvalidSpec instead of a KeyError deep in a controller."""
    db = spec.get("database") or {}
    pw = required(db, "passwordSecretRef", "spec.database")
    databases = tuple(db.get("databases") or ())
    for d in databases:
        if not DB_NAME.match(d):
            raise SpecError(f"spec.database.databases: invalid database name {d!r}")
        if d.lower() in SYSTEM_SCHEMAS:
            raise SpecError(f"spec.database.databases: system schema {d!r} cannot be backed up")
    tls = db.get("tls") or {}
    port = int(db.get("port", DEFAULT_PORT))
    if not 1 <= port <= 65535:
        raise SpecError("spec.database.port must be between 1 and 65535")
    database = DatabaseSpec(
        host=str(required(db, "host", "spec.database")),
        port=port,
        user=str(required(db, "user", "spec.database")),
        password=SecretKeyRef(
            str(required(pw, "name", "spec.database.passwordSecretRef")), str(pw.get("key", DEFAULT_PASSWORD_KEY))
        ),
        databases=databases,
        tls_enabled=bool(tls.get("enabled", False)),
        tls_ca=_secret_key_ref(tls.get("caSecretRef"), DEFAULT_CA_KEY),
    )
    storage = spec.get("storage") or {}
    backend = chosen_backend(storage)
    s3 = _parse_s3(storage["s3"]) if backend == "s3" else None
    azure = parse_azure_blob(storage["azureBlob"]) if backend == "azureBlob" else None
    gcs = parse_gcs(storage["gcs"]) if backend == "gcs" else None
    b = spec.get("backup") or {}
    try:
        compression = Compression(b.get("compression", DEFAULT_COMPRESSION))
    except ValueError:
        raise SpecError(f"spec.backup.compression: unsupported value {b.get('compression')!r}") from None
    extra = tuple(b.get("extraDumpArgs") or ())
    bad = [a for a in extra if not dump_arg_allowed(a)]
    if bad:
        raise SpecError(f"spec.backup.extraDumpArgs: not allowed: {', '.join(bad)}")
    jt = spec.get("jobTemplate") or {}
    ttl = jt.get("ttlSecondsAfterFinished")
    job = JobTemplate(
        image=str(jt.get("image") or default_image),
        image_pull_policy=jt.get("imagePullPolicy"),
        resources=dict(jt.get("resources") or {}),
        node_selector=dict(jt.get("nodeSelector") or {}),
        tolerations=tuple(jt.get("tolerations") or ()),
        active_deadline_seconds=int(jt.get("activeDeadlineSeconds", DEFAULT_ACTIVE_DEADLINE_SECONDS)),
        backoff_limit=int(jt.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)),
        ttl_seconds_after_finished=int(ttl) if ttl is not None else DEFAULT_TTL_SECONDS_AFTER_FINISHED,
    )
    return PolicySpec(
        name=name,
        namespace=namespace,
        database=database,
        s3=s3,
        compression=compression,
        compression_level=b.get("compressionLevel"),
        extra_dump_args=extra,
        job=job,
        layout=str(b.get("layout") or DEFAULT_LAYOUT),
        encryption_key=_encryption_key(b.get("encryption")),
        azure_blob=azure,
        gcs=gcs,
        pitr=parse_pitr(spec.get("pointInTimeRecovery")),
        raw=spec,
    )


def _sse(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """storage.s3.serverSideEncryption, with the same consistency rules as the CRD's CEL."""
    if not raw:
        return {}
    mode = raw.get("mode")
    if mode not in SSE_MODES:
        raise SpecError(f"spec.storage.s3.serverSideEncryption.mode must be one of {', '.join(SSE_MODES)}")
    kms = raw.get("kmsKeyId") or None
    ref = raw.get("customerKeySecretRef")
    if kms and mode != "SSE-KMS":
        raise SpecError(f"spec.storage.s3.serverSideEncryption.{_SSE_KMS_ONLY}")
    if (mode == "SSE-C") != bool(ref):
        raise SpecError(f"spec.storage.s3.serverSideEncryption.{_SSE_C_KEY}")
    if ref:
        required(ref, "name", "spec.storage.s3.serverSideEncryption.customerKeySecretRef")
    customer = _secret_key_ref(ref, DEFAULT_SSE_CUSTOMER_KEY_KEY)
    return {"sse_mode": mode, "sse_kms_key_id": kms, "sse_customer_key": customer}


def _encryption_key(raw: Mapping[str, Any] | None) -> SecretKeyRef | None:
    if not raw:
        return None
    ref = required(raw, "keySecretRef", "spec.backup.encryption")
    required(ref, "name", "spec.backup.encryption.keySecretRef")
    return _secret_key_ref(ref, DEFAULT_ENCRYPTION_KEY_KEY)


def _parse_s3(s3raw: Mapping[str, Any]) -> S3Spec:
    creds = required(s3raw, "credentialsSecretRef", "spec.storage.s3")
    return S3Spec(
        bucket=str(required(s3raw, "bucket", "spec.storage.s3")),
        prefix=str(s3raw.get("prefix") or "").strip("/"),
        endpoint=s3raw.get("endpoint") or None,
        region=str(s3raw.get("region") or DEFAULT_REGION),
        force_path_style=bool(s3raw.get("forcePathStyle", False)),
        credentials_secret=str(required(creds, "name", "spec.storage.s3.credentialsSecretRef")),
        access_key_id_key=str(creds.get("accessKeyIdKey", DEFAULT_ACCESS_KEY_ID_KEY)),
        secret_access_key_key=str(creds.get("secretAccessKeyKey", DEFAULT_SECRET_ACCESS_KEY_KEY)),
        session_token_key=creds.get("sessionTokenKey") or None,
        ca_bundle=_secret_key_ref(s3raw.get("caBundleSecretRef"), DEFAULT_CA_KEY),
        **_sse(s3raw.get("serverSideEncryption")),
    )


# ---------------------------------------------------------------------------- the spec schema

_SSE_KMS_ONLY = "kmsKeyId is only allowed with mode SSE-KMS"
_SSE_C_KEY = "customerKeySecretRef is required with mode SSE-C and only allowed with it"


def _quoted(items: tuple[str, ...]) -> str:
    return ", ".join(f"'{i}'" for i in items)


def _secret_ref(*, name: dict[str, Any], default_key: str, **key: Any) -> dict[str, Any]:
    return obj({"name": name, "key": prop("string", default=default_key, **key)}, required=["name"])


def _int_or_string_map() -> dict[str, Any]:
    return prop(
        "object",
        additionalProperties={"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True},
    )


def _count(maximum: int) -> dict[str, Any]:
    return prop("integer", minimum=0, maximum=maximum)


_SCHEDULE = prop(
    "string",
    maxLength=200,
    description="Standard 5-field cron expression, or @yearly/@monthly/@weekly/@daily/@hourly.",
    rules=[
        rule(
            f"self.matches(r'{SCHEDULE_PATTERN}')",
            'schedule must be a 5-field cron expression (minute hour day-of-month month day-of-week, e.g. "0 2 * * *" '
            'or "*/15 * * * *") or one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly',
        )
    ],
)
_TIME_ZONE = prop(
    "string",
    default=DEFAULT_TIME_ZONE,
    maxLength=64,
    description="IANA time zone the schedule and the retention periods are evaluated in.",
    rules=[
        rule(
            f"self in [{_quoted(TIME_ZONES)}]",
            "timeZone must be an IANA time zone name such as UTC, Europe/Berlin or America/New_York",
        )
    ],
)
_RETENTION = obj(
    {
        "keepLast": _count(100000),
        "keepDaily": _count(100000),
        "keepWeekly": _count(100000),
        "keepMonthly": _count(100000),
        "keepYearly": _count(1000),
        "maxAge": prop(
            "string",
            pattern="^[1-9][0-9]*(m|h|d|w)$",
            description="Maximum age such as 90d, 12w, 36h; the newest successful backup is always kept.",
        ),
        "keepFailed": prop("integer", minimum=0, maximum=1000, default=DEFAULT_KEEP_FAILED),
    },
    description=(
        "Which scheduled Backups to keep. Absent: daily backups for 30 days and weekly ones for 13 weeks. "
        "Manual and pre-restore backups are never removed automatically."
    ),
)
_DATABASE = obj(
    {
        "host": prop(
            "string",
            minLength=1,
            maxLength=253,
            pattern="^[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?$",
            description="Hostname or IP address of the MySQL/MariaDB server.",
        ),
        "port": prop("integer", minimum=1, maximum=65535, default=DEFAULT_PORT),
        "user": prop("string", minLength=1, maxLength=80, pattern="^[^\\s'\"`\\\\]+$"),
        "passwordSecretRef": _secret_ref(
            name=prop("string", minLength=1, maxLength=253),
            default_key=DEFAULT_PASSWORD_KEY,
            minLength=1,
            maxLength=253,
        ),
        "databases": prop(
            "array",
            description="Databases to back up; empty means every user database.",
            maxItems=64,
            items=prop("string", minLength=1, maxLength=64, pattern=DB_NAME_PATTERN),
            list_type="set",
            rules=[
                rule(
                    f"self.all(d, !(d in [{_quoted(SYSTEM_SCHEMAS)}]))",
                    f"system schemas ({', '.join(SYSTEM_SCHEMAS)}) cannot be backed up",
                )
            ],
        ),
        "tls": obj(
            {
                "enabled": prop("boolean", default=False),
                "caSecretRef": _secret_ref(name=prop("string", minLength=1), default_key=DEFAULT_CA_KEY),
            }
        ),
    },
    required=["host", "user", "passwordSecretRef"],
)
_S3 = obj(
    {
        "bucket": prop("string", minLength=3, maxLength=63, pattern="^[a-z0-9][a-z0-9.-]*[a-z0-9]$"),
        "prefix": prop(
            "string",
            maxLength=512,
            default="",
            pattern="^([A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*)?$",
            description="Key prefix inside the bucket, without leading or trailing slash.",
        ),
        "endpoint": prop(
            "string",
            maxLength=2048,
            pattern="^https?://[^\\s/]+(/.*)?$",
            description="S3 endpoint URL; leave empty for AWS.",
        ),
        "region": prop("string", default=DEFAULT_REGION, maxLength=64),
        "forcePathStyle": prop("boolean", default=False),
        "credentialsSecretRef": obj(
            {
                "name": prop("string", minLength=1, maxLength=253),
                "accessKeyIdKey": prop("string", default=DEFAULT_ACCESS_KEY_ID_KEY),
                "secretAccessKeyKey": prop("string", default=DEFAULT_SECRET_ACCESS_KEY_KEY),
                "sessionTokenKey": prop(
                    "string", description="Optional key holding a session token (temporary credentials)."
                ),
            },
            required=["name"],
        ),
        "caBundleSecretRef": _secret_ref(name=prop("string", minLength=1), default_key=DEFAULT_CA_KEY),
        "serverSideEncryption": obj(
            {
                "mode": prop("string", enum=SSE_MODES),
                "kmsKeyId": prop("string", minLength=1, maxLength=2048),
                "customerKeySecretRef": _secret_ref(
                    name=prop("string", minLength=1, maxLength=253),
                    default_key=DEFAULT_SSE_CUSTOMER_KEY_KEY,
                    minLength=1,
                    maxLength=253,
                ),
            },
            required=["mode"],
            rules=[
                rule("!has(self.kmsKeyId) || self.mode == 'SSE-KMS'", _SSE_KMS_ONLY),
                rule(
                    "self.mode == 'SSE-C' ? has(self.customerKeySecretRef) : !has(self.customerKeySecretRef)",
                    _SSE_C_KEY,
                ),
            ],
            description=(
                "S3 server-side encryption of the stored objects: SSE-S3 (keys managed by S3), SSE-KMS "
                "(a KMS key, kmsKeyId or the bucket's default) or SSE-C (a customer key from a Secret, "
                "base64 of 32 random bytes). Independent of backup.encryption (client-side)."
            ),
        ),
    },
    required=["bucket", "credentialsSecretRef"],
)
_STORAGE = obj(
    {
        "sync": prop(
            "boolean",
            default=False,
            description="Periodically import dumps found in storage that have no Backup (recovery).",
        ),
        "syncIntervalSeconds": prop("integer", minimum=10, maximum=86400, default=DEFAULT_SYNC_INTERVAL_SECONDS),
        "s3": _S3,
        "azureBlob": AZURE_BLOB_SCHEMA,
        "gcs": GCS_SCHEMA,
    },
    rules=[ONE_BACKEND],
    description="Where backups go. Exactly one backend - s3, azureBlob or gcs.",
)
_BACKUP = obj(
    {
        "compression": prop("string", enum=Compression, default=DEFAULT_COMPRESSION.value),
        "compressionLevel": prop(
            "integer",
            minimum=1,
            maximum=19,
            description=(
                "Unset with zstd: chosen per stored object, the cheapest of levels 1-3 whose output for the "
                "object's first 2 MiB is no larger than level 3's (level 3 for tables the server estimates "
                "below 64 MiB). Unset with gzip: 6."
            ),
        ),
        "layout": prop(
            "string",
            description=(
                "single stores the whole dump as one object; perTable splits the same single-transaction "
                "dump into one object per table plus a prologue and an epilogue, which a Restore can load in "
                "parallel (spec.parallelism) and table by table (spec.tables)."
            ),
            enum=LAYOUTS,
            default=DEFAULT_LAYOUT,
        ),
        "encryption": obj(
            {
                "keySecretRef": _secret_ref(
                    name=prop("string", minLength=1, maxLength=253),
                    default_key=DEFAULT_ENCRYPTION_KEY_KEY,
                    minLength=1,
                    maxLength=253,
                    pattern="^[-._a-zA-Z0-9]+$",
                ),
            },
            required=["keySecretRef"],
            description=(
                "Client-side encryption of every stored object with age (X25519). keySecretRef names a Secret "
                "key holding an age identity file (AGE-SECRET-KEY-1... lines; the first one encrypts new "
                "backups, all of them can decrypt). See docs/encryption.md."
            ),
        ),
        "extraDumpArgs": prop(
            "array",
            maxItems=32,
            items=prop("string", maxLength=256),
            rules=[
                rule(
                    f"self.all(a, a in [{_quoted(FIXED_DUMP_ARGS)}] || "
                    + " || ".join(f"a.matches('{p}')" for p, _ in DUMP_ARG_PATTERNS)
                    + ")",
                    "extraDumpArgs only allows "
                    + ", ".join([*FIXED_DUMP_ARGS, *(shown for _, shown in DUMP_ARG_PATTERNS[:-1])])
                    + f" and {DUMP_ARG_PATTERNS[-1][1]}",
                )
            ],
        ),
    },
    default={},
)
_JOB_TEMPLATE = obj(
    {
        "image": prop("string", maxLength=512),
        "imagePullPolicy": prop("string", enum=("Always", "IfNotPresent", "Never")),
        "resources": obj({"limits": _int_or_string_map(), "requests": _int_or_string_map()}),
        "nodeSelector": prop("object", additionalProperties={"type": "string"}),
        "tolerations": prop(
            "array",
            items=obj(
                {
                    "key": prop("string"),
                    "operator": prop("string", enum=("Exists", "Equal")),
                    "value": prop("string"),
                    "effect": prop("string", enum=("NoSchedule", "PreferNoSchedule", "NoExecute")),
                    "tolerationSeconds": prop("integer"),
                }
            ),
        ),
        "activeDeadlineSeconds": prop("integer", minimum=30, maximum=604800, default=DEFAULT_ACTIVE_DEADLINE_SECONDS),
        "backoffLimit": prop("integer", minimum=0, maximum=10, default=DEFAULT_BACKOFF_LIMIT),
        "ttlSecondsAfterFinished": prop("integer", minimum=0, default=DEFAULT_TTL_SECONDS_AFTER_FINISHED),
    },
    default={},
)
SPEC_SCHEMA = obj(
    {
        "schedule": _SCHEDULE,
        "timeZone": _TIME_ZONE,
        "suspend": prop(
            "boolean",
            default=False,
            description="Stop creating scheduled Backups (retention and sync continue).",
        ),
        "startingDeadlineSeconds": prop(
            "integer",
            minimum=0,
            maximum=31536000,
            description="A run more than this late (for example after operator downtime) is skipped and recorded.",
        ),
        "retention": _RETENTION,
        "database": _DATABASE,
        "storage": _STORAGE,
        "backup": _BACKUP,
        "pointInTimeRecovery": PITR_SPEC_SCHEMA,
        "jobTemplate": _JOB_TEMPLATE,
    },
    required=["database", "storage"],
)


# ---------------------------------------------------------------------------- the status


@dataclass(frozen=True)
class PolicyStatus:
    """What controllers/policy.py writes: schedule bookkeeping, the roll-up of the policy's
    Backups, retention and sync results, and the ScheduleValid/BackupOverdue conditions."""

    observed_generation: int | None = wire(format="int64")
    reason: str | None = wire()
    message: str | None = wire()
    last_schedule_time: str | None = wire(format="date-time")
    next_schedule_time: str | None = wire(format="date-time")
    last_skipped_time: str | None = wire(format="date-time")
    skipped_runs: int | None = wire()
    missed_runs: int | None = wire()
    last_successful_backup: str | None = wire()
    last_successful_time: str | None = wire(format="date-time")
    last_failed_backup: str | None = wire()
    last_failed_time: str | None = wire(format="date-time")
    last_failure_reason: str | None = wire()
    backup_count: int | None = wire()
    completed_count: int | None = wire()
    failed_count: int | None = wire()
    stored_bytes: int | None = wire(format="int64")
    last_pruned_after: str | None = wire()
    last_prune_time: str | None = wire(format="date-time")
    pruned_count: int | None = wire()
    last_sync_time: str | None = wire(format="date-time")
    last_sync_error: str | None = wire()
    point_in_time_recovery: PitrStatus | None = wire(
        description="The archived binlogs, the recoverable windows (from -> to) and the gaps between them."
    )
    conditions: tuple[Condition, ...] = wire(default=(), extra=CONDITIONS_EXTRA)


CRD_FRAME = CRD(
    kind="BackupPolicy",
    plural=POLICIES,
    short_names=("mbp", "bpol"),
    description="Which database to back up, where its backups go and how the backup Jobs run.",
    printer_columns=(
        column("Host", "string", ".spec.database.host"),
        column("Bucket", "string", ".spec.storage.s3.bucket"),
        column("Schedule", "string", ".spec.schedule"),
        column("Last Success", "date", ".status.lastSuccessfulTime"),
        column("Next", "string", ".status.nextScheduleTime", priority=1),
        column("Backups", "integer", ".status.completedCount", priority=1),
        column("Age", "date", ".metadata.creationTimestamp"),
    ),
)


def crd() -> dict[str, Any]:
    return CRD_FRAME.render(SPEC_SCHEMA, PolicyStatus)
