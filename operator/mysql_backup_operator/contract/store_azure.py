"""Azure Blob Storage behind the ObjectStore interface, with azure-storage-blob.

A dump is a block blob written as staged blocks (Put Block) and published by one Put Block
List: until that commit nothing is visible under the name, and uncommitted blocks of an aborted
or killed upload are discarded by the service (after a week at most), so no partial object ever
appears. Credentials, in order: a connection string, an account key, a SAS token, or (none of
them) the pod's Azure workload identity through azure-identity's DefaultAzureCredential.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from typing import Any

from .config import StorageConfig
from .parts import PartWriter
from .store import DEFAULT_PART_SIZE, READ_CHUNK, Backend, absent_ok, listed_size

# The SDK's own download/upload buffering: bounded, so a get or a put never holds more.
MAX_SINGLE = 4 * 1024 * 1024


def _block_id(number: int) -> str:
    # Block ids of one blob must all have the same length: a fixed-width number, base64-encoded.
    return base64.b64encode(f"mbo-{number:08d}".encode()).decode()


class BlockWriter(PartWriter):
    def __init__(
        self,
        blob: Any,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        max_in_flight: int = 2,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.blob = blob
        self.metadata = {k.replace("-", "_"): v for k, v in (metadata or {}).items()}
        super().__init__(part_size=part_size, max_in_flight=max_in_flight, name="az-block")

    def _upload_part(self, number: int, chunk: bytearray, *, offset: int, last: bool) -> str:
        block = _block_id(number)
        self.blob.stage_block(block_id=block, data=chunk, length=len(chunk))  # no copy: the SDK sends it as is
        return block

    def _commit(self, tokens: list[Any]) -> None:
        from azure.storage.blob import BlobBlock

        self.blob.commit_block_list([BlobBlock(block_id=t) for t in tokens], metadata=self.metadata)

    def _cancel(self) -> None:
        """Nothing to call: staged blocks are never a blob without a commit."""


def service_client(cfg: StorageConfig) -> Any:
    from azure.storage.blob import BlobServiceClient

    opts: dict[str, Any] = {"max_single_get_size": MAX_SINGLE, "max_chunk_get_size": MAX_SINGLE}
    opts["connection_timeout"], opts["read_timeout"] = 10, 60
    if cfg.azure_connection_string:
        return BlobServiceClient.from_connection_string(cfg.azure_connection_string, **opts)
    if not cfg.endpoint:
        raise ValueError("storage.azureBlob needs serviceURL (or a connection string)")
    credential: Any
    if cfg.azure_account_key:
        credential = {"account_name": cfg.azure_account_name, "account_key": cfg.azure_account_key}
    elif cfg.azure_sas_token:
        credential = cfg.azure_sas_token.lstrip("?")
    else:
        from azure.identity import DefaultAzureCredential  # workload identity; optional dependency

        credential = DefaultAzureCredential()
    return BlobServiceClient(account_url=cfg.endpoint, credential=credential, **opts)


class AzureBlobStore:
    backend = Backend.AZURE_BLOB

    def __init__(self, cfg: StorageConfig) -> None:
        self.bucket = cfg.bucket
        self.service = service_client(cfg)
        self.container = self.service.get_container_client(cfg.bucket)

    def writer(self, key: str, *, metadata: dict[str, str] | None = None) -> BlockWriter:
        return BlockWriter(self.container.get_blob_client(key), metadata=metadata)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        from azure.storage.blob import ContentSettings

        self.container.get_blob_client(key).upload_blob(
            data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
        )

    def get(self, key: str) -> bytes:
        return bytes(self.container.get_blob_client(key).download_blob().readall())

    def iter(self, key: str, *, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        # The SDK's chunks are max_chunk_get_size long, whatever `chunk` asks: bounded either way.
        yield from self.container.get_blob_client(key).download_blob(max_concurrency=1).chunks()

    def list(self, prefix: str) -> Iterator[str]:
        return (k for k, _ in self.sizes(prefix))

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        for b in self.container.list_blobs(name_starts_with=prefix):
            yield str(b.name), int(b.size)

    def size(self, key: str) -> int | None:
        return listed_size(self.sizes, key)

    def delete(self, key: str) -> None:
        with absent_ok():
            self.container.get_blob_client(key).delete_blob()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.service.close()
