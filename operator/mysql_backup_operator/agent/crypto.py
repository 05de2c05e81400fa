"""Client-side encryption of stored objects as a stream stage: age v1 (X25519) through pyrage.

Why age: the standard `age`/`rage` tools decrypt our objects, so a user needs nothing of this
operator to read a backup; the format is STREAM (64 KiB ChaCha20-Poly1305 chunks, the last one
flagged), so tampering and truncation are detected with bounded memory. See
docs/design-encryption.md.

The stage is self-contained so the pipeline only wraps a sink (backup) or a source (restore):

    sink = Encryptor(recipient, sink).write ... .close()      compressed bytes in, age bytes out
    for plain in decrypt_chunks(stored_chunks, identity): ...   age bytes in, compressed bytes out

pyrage's `encrypt_io`/`decrypt_io` pull from a reader and push to a writer until EOF, so each
runs in its own thread behind a small bounded queue (a few chunks per stream, never an object).
Key material never appears in an exception message: parse errors say which line, not what it held.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import pyrage

from ..api import Reason
from ..contract.config import ENCRYPTION_FORMAT
from ..contract.encryption import Keyring, KeyringError, key_id, parse_keyring, restore_key_problem
from ..contract.keys import ENCRYPTED_SUFFIX
from .errors import AgentError

FORMAT = ENCRYPTION_FORMAT
SUFFIX = ENCRYPTED_SUFFIX
MAGIC = b"age-encryption.org/v1\n"
QUEUE_DEPTH = 4
OUT_CHUNK = 256 * 1024
POLL = 0.5

__all__ = [
    "FORMAT",
    "SUFFIX",
    "Decryptor",
    "Encryptor",
    "Keyring",
    "KeyringError",
    "Stage",
    "decrypt_chunks",
    "identity_for",
    "key_id",
    "maybe_decrypt",
    "parse_keyring",
    "recipient_for",
    "stage",
    "verify",
]


# ----------------------------------------------------------------------------- the pipeline's hooks


class Stage(Protocol):
    """What the backup pipeline writes stored bytes through: plain, or encrypting."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _Plain:
    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink = sink

    def write(self, data: bytes) -> None:
        self.sink(data)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def stage(recipient: Any | None, sink: Callable[[bytes], None]) -> Stage:
    """The backup hook: `sink` unchanged without a recipient, else an Encryptor in front of it."""
    return _Plain(sink) if recipient is None else Encryptor(recipient, sink)


def maybe_decrypt(source: Iterable[bytes], identity: Any | None, *, what: str) -> Iterable[bytes]:
    """The restore hook: stored chunks in, compressed chunks out."""
    return source if identity is None else decrypt_chunks(source, identity, what=what)


def recipient_for(key_text: str | None) -> tuple[Any, dict[str, str]]:
    """The backup side: (recipient to encrypt to, the manifest's encryption entry)."""
    if not key_text:
        raise AgentError(
            Reason.ENCRYPTION_KEY_MISSING,
            "the policy encrypts backups (spec.backup.encryption) but the Job got no key",
            permanent=True,
        )
    try:
        ring = parse_keyring(key_text)
    except KeyringError as e:
        raise AgentError(Reason.ENCRYPTION_KEY_INVALID, str(e), permanent=True) from None
    return ring.recipient, {"format": FORMAT, "keyId": ring.current_key_id}


def identity_for(encryption: Any, key_text: str | None) -> Any | None:
    """The restore side: the identity that decrypts a backup whose manifest says `encryption`
    (None for a plain backup). Fails before anything is read when no key can work; the operator
    runs the same check (contract.encryption) before the safety backup."""
    problem = restore_key_problem(encryption=encryption, key_text=key_text)
    if problem:
        raise AgentError(problem[0], problem[1], permanent=True)
    if not encryption:
        return None
    return parse_keyring(key_text or "").identity_for(str(encryption.get("keyId")))


# ----------------------------------------------------------------------------- encryption


_ABORT = object()


class _QueueReader:
    """The file pyrage reads from: chunks put on a queue by the producer; None is EOF, _ABORT an
    error (so an aborted stream never gets a valid final chunk)."""

    def __init__(self, q: queue.Queue[Any]) -> None:
        self.q = q
        self.buf = memoryview(b"")
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        while not self.buf and not self.eof:
            item = self.q.get()
            if item is _ABORT:
                raise OSError("encryption aborted")
            if item is None:
                self.eof = True
            else:
                self.buf = memoryview(item)
        if n is None or n < 0:
            n = len(self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return bytes(out)


class _CallWriter:
    """The file pyrage writes to: every write goes to a callable. What the callable raises is
    kept, so the caller sees the original error (a storage error), not pyrage's wrapper."""

    def __init__(self, fn: Callable[[bytes], None], errors: list[BaseException]) -> None:
        self.fn, self.errors = fn, errors

    def write(self, data: bytes) -> int:
        try:
            self.fn(bytes(data))
        except BaseException as e:
            self.errors.append(e)
            raise
        return len(data)

    def flush(self) -> None:
        pass


class Encryptor:
    """Encrypts a byte stream to one age recipient, passing the ciphertext to `sink`.

    `write` from the producing thread; `close` writes the final (flagged) chunk and returns only
    when `sink` has seen every byte; `abort` stops the worker without waiting. `sink` runs on the
    worker thread (one thread only, so a non-thread-safe sink such as a multipart writer is fine).
    """

    def __init__(self, recipient: Any, sink: Callable[[bytes], None], *, depth: int = QUEUE_DEPTH) -> None:
        self.q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(recipient, sink), name="age-encrypt", daemon=True)
        self.thread.start()

    def _run(self, recipient: Any, sink: Callable[[bytes], None]) -> None:
        try:
            pyrage.encrypt_io(_QueueReader(self.q), _CallWriter(sink, self.errors), [recipient])
        except BaseException as e:
            self.errors.append(e)
        finally:
            self.done.set()

    def _raise(self) -> None:
        if self.errors:
            raise self.errors[0]
        raise AgentError(Reason.DUMP_FAILED, "the encryption stage stopped early", permanent=False)

    def _put(self, item: bytes | None) -> None:
        while True:
            if self.done.is_set():
                self._raise()
            try:
                self.q.put(item, timeout=POLL)
                return
            except queue.Full:
                continue

    def write(self, data: bytes) -> None:
        if data:
            self._put(bytes(data))

    def close(self) -> None:
        self._put(None)
        self.thread.join()
        if self.errors:
            raise self.errors[0]

    def abort(self) -> None:
        """Ends the worker at its next read; whatever it had not uploaded is never published
        (the caller aborts the upload)."""
        self.errors.append(AgentError(Reason.INTERRUPTED, "encryption aborted", permanent=False))
        while True:
            try:
                self.q.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self.q.put_nowait(_ABORT)


# ----------------------------------------------------------------------------- decryption


_END = object()


class _IterReader:
    """The file pyrage reads from: an iterator of chunks (an S3 body). Its errors are kept."""

    def __init__(self, source: Iterable[bytes], errors: list[BaseException]) -> None:
        self.it = iter(source)
        self.buf = memoryview(b"")
        self.errors = errors

    def read(self, n: int = -1) -> bytes:
        try:
            while not self.buf:
                self.buf = memoryview(next(self.it))
        except StopIteration:
            return b""
        except BaseException as e:
            self.errors.append(e)
            raise
        if n is None or n < 0:
            n = len(self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return bytes(out)


class Decryptor:
    """Pull-style decryption: iterate over it to get plaintext chunks (up to 256 KiB each).

    Raises AgentError(DecryptionFailed) when authentication fails (wrong key, modified or
    truncated object); errors of the source (storage) propagate unchanged. Plaintext before a
    failure has already been yielded: callers that must not apply unauthenticated data run a
    verification pass first (`verify`).
    """

    def __init__(self, source: Iterable[bytes], identity: Any, *, what: str = "the backup") -> None:
        self.what = what
        self.q: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_DEPTH)
        self.errors: list[BaseException] = []
        self.source_errors: list[BaseException] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(source, identity), name="age-decrypt", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> None:
        while not self.stopped.is_set():
            try:
                self.q.put(item, timeout=POLL)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def _run(self, source: Iterable[bytes], identity: Any) -> None:
        pending = bytearray()

        def out(data: bytes) -> None:
            pending.extend(data)
            if len(pending) >= OUT_CHUNK:
                self._put(bytes(pending))
                pending.clear()

        try:
            pyrage.decrypt_io(_IterReader(source, self.source_errors), _CallWriter(out, []), [identity])
            if pending:
                self._put(bytes(pending))
        except _Stopped:
            return
        except BaseException as e:
            self.errors.append(e)
        try:
            self._put(_END)
        except _Stopped:
            return

    def __iter__(self) -> Iterator[bytes]:
        try:
            while True:
                item = self.q.get()
                if item is _END:
                    break
                yield item
            self.thread.join()
            if self.source_errors:
                raise self.source_errors[0]
            if self.errors:
                raise AgentError(
                    Reason.DECRYPTION_FAILED,
                    f"cannot decrypt {self.what}: authentication failed (wrong key, or the object was "
                    "modified or truncated); nothing was restored from it",
                    permanent=True,
                )
        finally:
            self.stopped.set()


class _Stopped(Exception):
    """The consumer went away; the worker ends quietly."""


def decrypt_chunks(source: Iterable[bytes], identity: Any, *, what: str = "the backup") -> Iterator[bytes]:
    return iter(Decryptor(source, identity, what=what))


def verify(source: Iterable[bytes], identity: Any, *, what: str) -> bytes:
    """Decrypts a whole stream to nowhere (authenticates every chunk and the end of the stream);
    returns the first plaintext bytes so the caller can check the compression's magic number."""
    head = b""
    for chunk in decrypt_chunks(source, identity, what=what):
        if len(head) < 16:
            head += chunk[: 16 - len(head)]
    return head
