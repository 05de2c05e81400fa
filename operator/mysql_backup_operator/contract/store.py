"""Object storage behind one narrow interface, shared by the agent (data path) and the operator
(deletion, recovery from storage, retention): S3, Azure Blob Storage and Google Cloud Storage.

Why a Protocol with five verbs (streaming put, streaming get, list, delete, size) and not a
general filesystem layer: that is all a backup needs, and each verb maps onto one native,
well-tested primitive of every backend. The one verb with a safety rule is the streaming put:
`Upload.complete()` publishes the object in one step (S3 CompleteMultipartUpload, Azure Put Block
List, the last chunk of a GCS resumable upload) and `Upload.abort()` (or a killed process) leaves
no object under the key, so a partial dump is never visible.

The SDKs are imported lazily, inside the backend module a store is opened from: an S3 agent
never loads the Azure or Google libraries (the agent pod has a 128 MiB memory target).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .config import StorageConfig

READ_CHUNK = 1024 * 1024
DEFAULT_PART_SIZE = 8 * 1024 * 1024


class Backend(StrEnum):
    """The key under `spec.storage` that selects the backend, and the URL scheme of its objects."""

    S3 = "s3"
    AZURE_BLOB = "azureBlob"
    GCS = "gcs"


SCHEMES = {Backend.S3: "s3", Backend.AZURE_BLOB: "azblob", Backend.GCS: "gs"}


def object_url(backend: Backend | str, bucket: str, key: str) -> str:
    """`s3://bucket/key`, `azblob://container/key` or `gs://bucket/key`: what status.location shows."""
    return f"{SCHEMES[Backend(backend)]}://{bucket}/{key}"


def parse_object_url(url: str) -> tuple[Backend, str, str]:
    """The inverse of object_url; raises ValueError for anything else."""
    scheme, sep, rest = url.partition("://")
    for backend, s in SCHEMES.items():
        if sep and scheme == s and "/" in rest:
            bucket, key = rest.split("/", 1)
            if bucket and key:
                return backend, bucket, key
    raise ValueError(f"not an object storage URL (s3://, azblob:// or gs://): {url!r}")


class ErrorKind(StrEnum):
    DENIED = "denied"
    MISSING = "missing"
    FULL = "full"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"


_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AccountProblem",
    "Forbidden",
    "403",
    # Azure
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "InsufficientAccountPermissions",
}
_FULL = {"XMinioStorageFull", "QuotaExceeded", "XMinioAdminBucketQuotaExceeded", "EntityTooLarge", "StorageFull"}
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "404", "NotFound", "BlobNotFound", "ContainerNotFound"}
# No usable credentials at all: google-auth could not get a token, azure-identity found no identity.
_CREDENTIAL_ERRORS = {
    "RefreshError",
    "DefaultCredentialsError",
    "ClientAuthenticationError",
    "CredentialUnavailableError",
}
_TIMEOUTS = {"ReadTimeoutError", "ConnectTimeoutError", "ReadTimeout", "ConnectTimeout", "ServiceResponseTimeoutError"}


def error_code(exc: BaseException) -> tuple[str, int]:
    """(error code, HTTP status) of an S3, Azure or Google SDK exception, without importing any SDK.

    botocore puts them in `response`; azure-core in `error_code`/`status_code`; google-api-core in
    `code` (the HTTP status) and `reason`.
    """
    code, status = "", 0
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    az_code, az_status = getattr(exc, "error_code", None), getattr(exc, "status_code", None)
    if az_code:
        code = str(az_code)
    if isinstance(az_status, int):
        status = az_status
    g_status = getattr(exc, "code", None)
    if isinstance(g_status, int) and not status and type(exc).__module__.startswith("google"):
        status = g_status
    return code, status


def classify(exc: BaseException) -> ErrorKind:
    """What a storage failure means for the caller, whatever the backend."""
    code, status = error_code(exc)
    if code in _DENIED or status in (401, 403) or type(exc).__name__ in _CREDENTIAL_ERRORS:
        return ErrorKind.DENIED
    if code in _FULL or status == 507:
        return ErrorKind.FULL
    if code in _MISSING or status == 404:
        return ErrorKind.MISSING
    if type(exc).__name__ in _TIMEOUTS or isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT
    return ErrorKind.UNAVAILABLE


def describe(exc: BaseException) -> str:
    """A short, secret-free description: the code and exception type, never a URL (a SAS token
    would be in it) or the SDK's full text."""
    code, status = error_code(exc)
    return " ".join(p for p in (code, str(status) if status else "", type(exc).__name__) if p)


def is_sdk_error(exc: BaseException) -> bool:
    """Raised by a storage SDK or its HTTP stack (as opposed to our own code or a subprocess)."""
    return type(exc).__module__.startswith(
        ("botocore", "boto3", "urllib3", "s3transfer", "azure", "google", "requests")
    )


class Upload(Protocol):
    """A streaming write of one object: nothing is visible under the key until `complete()`."""

    bytes_written: int
    slot_wait: float  # seconds the writer blocked waiting for in-flight parts (a pipeline figure)

    def write(self, data: bytes) -> None: ...

    def complete(self) -> None: ...

    def abort(self) -> None:
        """Never raises; after it, no object exists under the key from this upload."""


class ObjectStore(Protocol):
    """One bucket (S3, GCS) or container (Azure) of one backend."""

    backend: Backend
    bucket: str

    def writer(self, key: str, *, metadata: dict[str, str] | None = None) -> Upload: ...

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """A small object (the manifest) in one request."""

    def get(self, key: str) -> bytes:
        """A small object whole (the manifest)."""

    def iter(self, key: str, *, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        """A large object as a stream of chunks, with bounded memory."""

    def list(self, prefix: str) -> Iterator[str]: ...

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Every object under `prefix` with its size, from the listing (one request per page)."""

    def size(self, key: str) -> int | None:
        """The object's size, or None when it does not exist. From a listing of the key, not a
        HEAD: S3 answers HEAD of an SSE-C object only with the customer key, which the operator
        never holds, while a listing shows every object's size to anyone allowed to list."""

    def delete(self, key: str) -> None:
        """Deleting a missing object is success, so a retried deletion is idempotent."""

    def close(self) -> None: ...


def open_store(cfg: StorageConfig, *, max_pool_connections: int = 10) -> ObjectStore:
    """The store for an agent or operator StorageConfig; imports only the chosen backend's SDK."""
    backend = Backend(cfg.backend)
    if backend == Backend.AZURE_BLOB:
        from .store_azure import AzureBlobStore

        return AzureBlobStore(cfg)
    if backend == Backend.GCS:
        from .store_gcs import GcsStore

        return GcsStore(cfg)
    from .store_s3 import S3Store

    return S3Store(cfg, max_pool_connections=max_pool_connections)


def size_in(listing: Iterable[tuple[str, int]], key: str) -> int | None:
    """The size of exactly `key` in a listing of prefix `key` (which also holds longer keys,
    `dump.sql.zst.json` next to `dump.sql.zst`), or None when it is not there."""
    return next((n for k, n in listing if k == key), None)


def listed_size(sizes: Callable[[str], Iterable[tuple[str, int]]], key: str) -> int | None:
    """`size(key)` from a listing of the key itself, the same answer on every backend (a HEAD
    would need the SSE-C customer key on S3); a missing bucket means a missing object."""
    try:
        return size_in(sizes(key), key)
    except Exception as e:
        if missing(e):
            return None
        raise


def missing(exc: BaseException) -> bool:
    """The object (or its bucket) is not there, as opposed to "could not ask"."""
    return classify(exc) == ErrorKind.MISSING


@contextlib.contextmanager
def absent_ok() -> Iterator[None]:
    """Swallows "not there" (deleting a missing object is success), re-raises anything else."""
    try:
        yield
    except Exception as e:
        if not missing(e):
            raise
