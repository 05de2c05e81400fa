"""Google Cloud Storage behind the ObjectStore interface, with google-cloud-storage.

A dump is written through a resumable upload session: chunks (multiples of 256 KiB) go up in
order, and the object only exists once the last chunk, carrying the total size, is accepted.
Abort cancels the session; a killed agent's session simply expires. Credentials: a
service-account JSON key from a Secret, or (none) Application Default Credentials, which is how
GKE Workload Identity reaches the pod. With a custom `endpoint` (an emulator) and no key, the
client is anonymous.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from .config import StorageConfig
from .parts import PartWriter
from .store import DEFAULT_PART_SIZE, READ_CHUNK, Backend, absent_ok, listed_size

SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]


def _raise_for(response: Any, what: str) -> None:
    from google.api_core import exceptions

    raise exceptions.from_http_status(response.status_code, f"{what}: HTTP {response.status_code}")


class ResumableWriter(PartWriter):
    """One part in flight at a time: a resumable session takes its chunks strictly in order."""

    def __init__(
        self, blob: Any, http: Any, *, part_size: int = DEFAULT_PART_SIZE, metadata: dict[str, str] | None = None
    ) -> None:
        self.http = http
        blob.metadata = dict(metadata or {})
        self.session: str = blob.create_resumable_upload_session(content_type="application/octet-stream")
        self.finalized = False
        super().__init__(part_size=part_size, max_in_flight=1, name="gcs-chunk")

    def _put(self, body: bytes | bytearray, content_range: str) -> None:
        r = self.http.put(self.session, data=body, headers={"Content-Range": content_range}, timeout=120)
        if r.status_code not in (200, 201, 308):
            _raise_for(r, "resumable upload")

    def _upload_part(self, number: int, chunk: bytearray, *, offset: int, last: bool) -> None:
        end = offset + len(chunk)
        if last:
            self.finalized = True
            self._put(chunk, f"bytes {offset}-{end - 1}/{end}" if chunk else f"bytes */{end}")
        else:
            self._put(chunk, f"bytes {offset}-{end - 1}/*")

    def _commit(self, tokens: list[Any]) -> None:
        if not self.finalized:  # the data ended exactly on a chunk boundary: only the size is left to say
            self._put(b"", f"bytes */{self.submitted}")

    def _cancel(self) -> None:
        with contextlib.suppress(Exception):
            self.http.delete(self.session, timeout=30)


def _credentials(cfg: StorageConfig) -> Any:
    if cfg.gcs_credentials_json:
        from google.oauth2 import service_account

        creds = service_account.Credentials.from_service_account_info(
            json.loads(cfg.gcs_credentials_json), scopes=SCOPES
        )
        # An emulator has no OAuth token endpoint: sign a JWT with the key and send it directly.
        return creds.with_always_use_jwt_access(True) if cfg.endpoint else creds
    if cfg.endpoint:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    return None  # Application Default Credentials: GKE Workload Identity, or GOOGLE_APPLICATION_CREDENTIALS


class GcsStore:
    backend = Backend.GCS

    def __init__(self, cfg: StorageConfig) -> None:
        from google.cloud import storage

        self.bucket = cfg.bucket
        options = {"api_endpoint": cfg.endpoint} if cfg.endpoint else None
        project = cfg.gcs_project or ("local" if cfg.endpoint else None)
        self.client = storage.Client(project=project, credentials=_credentials(cfg), client_options=options)
        self.handle = self.client.bucket(cfg.bucket)

    def writer(self, key: str, *, metadata: dict[str, str] | None = None) -> ResumableWriter:
        return ResumableWriter(self.handle.blob(key), self.client._http, metadata=metadata)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        self.handle.blob(key).upload_from_string(data, content_type=content_type)

    def get(self, key: str) -> bytes:
        return bytes(self.handle.blob(key).download_as_bytes())

    def iter(self, key: str, *, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        with self.handle.blob(key).open("rb", chunk_size=chunk) as f:
            while data := f.read(chunk):
                yield data

    def list(self, prefix: str) -> Iterator[str]:
        return (k for k, _ in self.sizes(prefix))

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        for b in self.client.list_blobs(self.bucket, prefix=prefix):
            yield str(b.name), int(b.size)

    def size(self, key: str) -> int | None:
        return listed_size(self.sizes, key)

    def delete(self, key: str) -> None:
        with absent_ok():
            self.handle.blob(key).delete()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
