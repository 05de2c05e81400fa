"""The boto3 client factory shared by the agent (data path) and the operator (delete, list, import).

One factory so both sides use the same timeouts, retries and checksum settings: a setting that
works for the agent's uploads but not for the operator's deletions would only show up in production.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from .config import StorageConfig


@dataclass(frozen=True)
class SseParams:
    """S3 server-side encryption request parameters (storage.s3.serverSideEncryption).

    `create`: CreateMultipartUpload / PutObject of data objects; `part`: UploadPart; `read`:
    GetObject / HeadObject. SSE-S3 and SSE-KMS are decided at creation only; SSE-C must send the
    customer key with every request, reads included. The manifest is written with `manifest`
    (SSE-S3/KMS, never SSE-C, so the operator can read it without the customer key).
    """

    create: dict[str, Any] = field(default_factory=dict, repr=False)
    part: dict[str, Any] = field(default_factory=dict, repr=False)
    read: dict[str, Any] = field(default_factory=dict, repr=False)
    manifest: dict[str, Any] = field(default_factory=dict)


def sse_params(cfg: StorageConfig) -> SseParams:
    """Raises ValueError (naming the problem, never the key) for an unusable SSE-C key."""
    if cfg.sse_mode == "SSE-S3":
        return SseParams(create={"ServerSideEncryption": "AES256"}, manifest={"ServerSideEncryption": "AES256"})
    if cfg.sse_mode == "SSE-KMS":
        kms = {"ServerSideEncryption": "aws:kms", **({"SSEKMSKeyId": cfg.sse_kms_key_id} if cfg.sse_kms_key_id else {})}
        return SseParams(create=kms, manifest=dict(kms))
    if cfg.sse_mode == "SSE-C":
        try:
            key = base64.b64decode(cfg.sse_customer_key or "", validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise ValueError("the SSE-C customer key must be the base64 encoding of 32 bytes (openssl rand -base64 32)")
        # botocore adds the key's base64 and MD5 headers itself.
        c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
        return SseParams(create=c, part=c, read=c)
    return SseParams()


def client(cfg: StorageConfig, *, max_pool_connections: int = 10) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=cfg.secret_access_key,
        aws_session_token=cfg.session_token,
        region_name=cfg.region,
    )
    return session.client(
        "s3",
        endpoint_url=cfg.endpoint or None,
        verify=cfg.ca_file or True,
        config=Config(
            s3={"addressing_style": "path" if cfg.force_path_style else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=max_pool_connections,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
