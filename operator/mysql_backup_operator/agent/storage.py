"""The agent's object storage: the backend-neutral store (contract.store) it reads and writes
through, and the S3 pieces that older callers and tests import from here.

Memory stays flat whatever the dump size, on every backend: uploads go through
contract.parts.PartWriter (one part being filled, at most `max_in_flight` uploading) and any
failure aborts the upload so that no partial object ever becomes visible under the dump's key.
"""

from __future__ import annotations

from ..contract.parts import part_size_for
from ..contract.s3 import client
from ..contract.store import ObjectStore, Upload, open_store
from ..contract.store_s3 import MultipartWriter, iter_object

__all__ = ["MultipartWriter", "ObjectStore", "Upload", "client", "iter_object", "open_store", "part_size_for"]
