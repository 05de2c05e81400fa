"""The boto3 client factory shared by the agent (data path) and the operator (delete, list, import).

One factory so both sides use the same timeouts, retries and checksum settings: a setting that
works for the agent's uploads but not for the operator's deletions would only show up in production.
"""

from __future__ import annotations

from typing import Any

from .config import StorageConfig


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
