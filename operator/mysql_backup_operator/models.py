"""Typed views of the custom resources' specs.

The apiserver has already applied schema defaults and CEL rules; these parsers still check
everything the operator relies on, so a spec that slipped past an older CRD fails with a clear
`InvalidSpec` instead of a KeyError deep in a handler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .api import Compression, DeletionPolicy, Trigger

SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
_DB_NAME = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")
_FIXED_DUMP_ARGS = frozenset(
    {
        "--skip-extended-insert",
        "--complete-insert",
        "--skip-comments",
        "--order-by-primary",
        "--skip-tz-utc",
        "--skip-add-locks",
        "--no-tablespaces",
    }
)
_PATTERN_DUMP_ARGS = (
    re.compile(r"^--max-allowed-packet=[0-9]+[KMG]?$"),
    re.compile(r"^--net-buffer-length=[0-9]+[KM]?$"),
    re.compile(r"^--default-character-set=[A-Za-z0-9_]+$"),
    re.compile(r"^--ignore-table=[A-Za-z0-9_$-]+\.[A-Za-z0-9_$-]+$"),
)
DEFAULT_AGENT_IMAGE = "ghcr.io/mysql-backup-operator/mysql-backup-operator:0.1.0"


class SpecError(ValueError):
    """The spec cannot be acted on. The message is shown to the user as-is."""


def dump_arg_allowed(arg: str) -> bool:
    return arg in _FIXED_DUMP_ARGS or any(p.match(arg) for p in _PATTERN_DUMP_ARGS)


def _req(d: Mapping[str, Any], key: str, where: str) -> Any:
    v = d.get(key)
    if v in (None, ""):
        raise SpecError(f"{where}.{key} is required")
    return v


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
    s3: S3Spec
    compression: Compression
    compression_level: int | None
    extra_dump_args: tuple[str, ...]
    job: JobTemplate
    layout: str = "single"  # contract.config.LAYOUT_*: one object, or one per table
    # backup.encryption.keySecretRef: the age identity file that encrypts (first key) and decrypts.
    encryption_key: SecretKeyRef | None = None
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)


def parse_policy(
    *, name: str, namespace: str, spec: Mapping[str, Any], default_image: str = DEFAULT_AGENT_IMAGE
) -> PolicySpec:
    db = spec.get("database") or {}
    pw = _req(db, "passwordSecretRef", "spec.database")
    databases = tuple(db.get("databases") or ())
    for d in databases:
        if not _DB_NAME.match(d):
            raise SpecError(f"spec.database.databases: invalid database name {d!r}")
        if d.lower() in SYSTEM_SCHEMAS:
            raise SpecError(f"spec.database.databases: system schema {d!r} cannot be backed up")
    tls = db.get("tls") or {}
    tls_ca = tls.get("caSecretRef")
    port = int(db.get("port", 3306))
    if not 1 <= port <= 65535:
        raise SpecError("spec.database.port must be between 1 and 65535")
    database = DatabaseSpec(
        host=str(_req(db, "host", "spec.database")),
        port=port,
        user=str(_req(db, "user", "spec.database")),
        password=SecretKeyRef(str(_req(pw, "name", "spec.database.passwordSecretRef")), str(pw.get("key", "password"))),
        databases=databases,
        tls_enabled=bool(tls.get("enabled", False)),
        tls_ca=SecretKeyRef(tls_ca["name"], tls_ca.get("key", "ca.crt")) if tls_ca else None,
    )
    s3raw = (spec.get("storage") or {}).get("s3") or {}
    creds = _req(s3raw, "credentialsSecretRef", "spec.storage.s3")
    ca = s3raw.get("caBundleSecretRef")
    s3 = S3Spec(
        bucket=str(_req(s3raw, "bucket", "spec.storage.s3")),
        prefix=str(s3raw.get("prefix") or "").strip("/"),
        endpoint=s3raw.get("endpoint") or None,
        region=str(s3raw.get("region") or "us-east-1"),
        force_path_style=bool(s3raw.get("forcePathStyle", False)),
        credentials_secret=str(_req(creds, "name", "spec.storage.s3.credentialsSecretRef")),
        access_key_id_key=str(creds.get("accessKeyIdKey", "AWS_ACCESS_KEY_ID")),
        secret_access_key_key=str(creds.get("secretAccessKeyKey", "AWS_SECRET_ACCESS_KEY")),
        session_token_key=creds.get("sessionTokenKey") or None,
        ca_bundle=SecretKeyRef(ca["name"], ca.get("key", "ca.crt")) if ca else None,
        **_sse(s3raw.get("serverSideEncryption")),
    )
    b = spec.get("backup") or {}
    try:
        compression = Compression(b.get("compression", "zstd"))
    except ValueError:
        raise SpecError(f"spec.backup.compression: unsupported value {b.get('compression')!r}") from None
    extra = tuple(b.get("extraDumpArgs") or ())
    bad = [a for a in extra if not dump_arg_allowed(a)]
    if bad:
        raise SpecError(f"spec.backup.extraDumpArgs: not allowed: {', '.join(bad)}")
    jt = spec.get("jobTemplate") or {}
    job = JobTemplate(
        image=str(jt.get("image") or default_image),
        image_pull_policy=jt.get("imagePullPolicy"),
        resources=dict(jt.get("resources") or {}),
        node_selector=dict(jt.get("nodeSelector") or {}),
        tolerations=tuple(jt.get("tolerations") or ()),
        active_deadline_seconds=int(jt.get("activeDeadlineSeconds", 600)),
        backoff_limit=int(jt.get("backoffLimit", 0)),
        ttl_seconds_after_finished=(
            int(jt["ttlSecondsAfterFinished"]) if jt.get("ttlSecondsAfterFinished") is not None else 86400
        ),
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
        layout=str(b.get("layout") or "single"),
        encryption_key=_encryption_key(b.get("encryption")),
        raw=spec,
    )


SSE_MODES = ("SSE-S3", "SSE-KMS", "SSE-C")


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
        raise SpecError("spec.storage.s3.serverSideEncryption.kmsKeyId is only allowed with mode SSE-KMS")
    if (mode == "SSE-C") != bool(ref):
        raise SpecError(
            "spec.storage.s3.serverSideEncryption.customerKeySecretRef is required with mode SSE-C "
            "and only allowed with it"
        )
    customer = (
        SecretKeyRef(str(_req(ref, "name", "customerKeySecretRef")), str(ref.get("key", "sse-c.key"))) if ref else None
    )
    return {"sse_mode": mode, "sse_kms_key_id": kms, "sse_customer_key": customer}


def _encryption_key(raw: Mapping[str, Any] | None) -> SecretKeyRef | None:
    if not raw:
        return None
    ref = _req(raw, "keySecretRef", "spec.backup.encryption")
    return SecretKeyRef(str(_req(ref, "name", "spec.backup.encryption.keySecretRef")), str(ref.get("key", "age.key")))


@dataclass(frozen=True)
class BackupSpec:
    policy: str
    trigger: Trigger
    deletion_policy: DeletionPolicy
    description: str


def parse_backup(spec: Mapping[str, Any]) -> BackupSpec:
    ref = spec.get("policyRef") or {}
    try:
        trigger = Trigger(spec.get("trigger", "manual"))
        deletion = DeletionPolicy(spec.get("deletionPolicy", "Delete"))
    except ValueError as e:
        raise SpecError(str(e)) from None
    return BackupSpec(
        policy=str(_req(ref, "name", "spec.policyRef")),
        trigger=trigger,
        deletion_policy=deletion,
        description=str(spec.get("description") or ""),
    )


@dataclass(frozen=True)
class RestoreSpec:
    backup: str
    databases: tuple[str, ...]
    target: str | None
    tables: tuple[str, ...] = ()  # "database.table"; only with perTable backups
    parallelism: int | None = None


def parse_restore(spec: Mapping[str, Any]) -> RestoreSpec:
    ref = spec.get("backupRef") or {}
    databases = tuple(spec.get("databases") or ())
    target = spec.get("target") or None
    for d in (*databases, *([target] if target else [])):
        if not _DB_NAME.match(d) or d.lower() in SYSTEM_SCHEMAS:
            raise SpecError(f"invalid database name {d!r}")
    if target and len(databases) > 1:
        raise SpecError("spec.target can only be set when restoring a single database")
    tables = tuple(str(t) for t in spec.get("tables") or ())
    if tables and databases:
        raise SpecError("set either spec.databases or spec.tables, not both")
    for t in tables:
        db, dot, name = t.partition(".")
        if not dot or not _DB_NAME.match(db) or not _DB_NAME.match(name) or db.lower() in SYSTEM_SCHEMAS:
            raise SpecError(f"invalid table {t!r} (expected database.table)")
    if tables:
        databases = tuple(sorted({t.partition(".")[0] for t in tables}))
        if target and len(databases) > 1:
            raise SpecError("spec.target needs all spec.tables to come from one database")
    parallelism = spec.get("parallelism")
    if parallelism is not None and not 1 <= int(parallelism) <= 16:
        raise SpecError("spec.parallelism must be between 1 and 16")
    return RestoreSpec(
        backup=str(_req(ref, "name", "spec.backupRef")),
        databases=databases,
        target=target,
        tables=tables,
        parallelism=int(parallelism) if parallelism is not None else None,
    )


def restore_plan(spec: RestoreSpec, backed_up: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """Which databases a Restore applies, and under what target name, given what the dump holds."""
    chosen = spec.databases or backed_up
    missing = [d for d in chosen if d not in backed_up]
    if missing:
        raise SpecError(f"databases not in the backup: {', '.join(missing)} (it holds {', '.join(backed_up)})")
    if spec.target and len(chosen) != 1:
        raise SpecError(
            f"spec.target needs exactly one database, but the restore selects {len(chosen)}: {', '.join(chosen)}"
        )
    return tuple(chosen), spec.target
