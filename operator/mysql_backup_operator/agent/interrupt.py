"""SIGTERM as an exception, held back while a stored object is being opened.

The pod's deletion reaches the agent as SIGTERM, which the agent turns into `Terminated` so the
same cleanup as for any failure runs: abort every open upload, delete what was published. One
window escaped that cleanup: between the store creating an upload (S3 CreateMultipartUpload) and
the agent recording it in a variable the cleanup can see. A SIGTERM landing there left an
invisible but billable incomplete multipart upload behind; the per-table layout opens an object
at every table boundary, so a pod deleted just after a table was published hit it (seen in the
killed-agent e2e test). Inside `shielded()` the signal is remembered and raised when the block
ends, once the object is reachable by the cleanup.

Signal handlers run in the main thread only, so plain module state is enough. A shielded block
that blocks for long (a store that does not answer) delays the exception; the kubelet's SIGKILL
after the grace period still ends the pod, and the object store's own lifecycle rules are the
last line for what that leaves.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


class Terminated(BaseException):
    """SIGTERM arrived (deadline exceeded or pod deleted)."""


class _State:
    depth = 0
    pending = False


def on_sigterm(signum: int, frame: Any) -> None:
    if _State.depth:
        _State.pending = True
        return
    raise Terminated()


def install() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Defers SIGTERM to the end of the block (an exception from the block wins; the cleanup it
    triggers is the same)."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if not _State.depth and _State.pending:
        _State.pending = False
        raise Terminated()
