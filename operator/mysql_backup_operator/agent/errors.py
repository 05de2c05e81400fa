"""Failure classification: every error the agent can meet becomes one user-facing reason.

The operator copies `reason` into status verbatim, so the set here is the contract documented in
docs/troubleshooting.md. `permanent` decides the exit code: retrying an authentication failure
only locks accounts, while a storage blip deserves the Job's backoffLimit.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Iterable

from ..api import Reason
from ..contract import store

_PASSWORD_ASSIGN = re.compile(r"(?i)(password|passwd|secret|token|signature|credential)(\s*[=:]\s*)[^\s,;'\"]+")


class AgentError(Exception):
    def __init__(self, reason: Reason, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Removes every secret value, and anything that looks like one, from text meant for humans."""
    for s in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
        text = text.replace(s, "****")
    return _PASSWORD_ASSIGN.sub(r"\1\2****", text)


def tail(text: str, n: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


# MySQL/MariaDB client error numbers (see mysqld_error.h / errmsg.h).
_AUTH_ERRNOS = {1044, 1045, 1698, 1227, 1142, 1143, 1370}
_UNAVAILABLE_ERRNOS = {2002, 2003, 2005, 2006, 2013, 2026, 1040, 1053, 1205, 1213}


def from_mysql_errno(code: int, message: str, *, what: str) -> AgentError:
    if code in _AUTH_ERRNOS:
        return AgentError(Reason.AUTHENTICATION_FAILED, f"{what}: access denied ({code}): {message}", permanent=True)
    if code in _UNAVAILABLE_ERRNOS:
        return AgentError(
            Reason.DATABASE_UNAVAILABLE, f"{what}: cannot reach the database ({code}): {message}", permanent=False
        )
    if code == 1021 or code == 3 or "disk full" in message.lower():
        return AgentError(
            Reason.INSUFFICIENT_STORAGE,
            f"{what}: the database server is out of disk ({code}): {message}",
            permanent=False,
        )
    reason = Reason.DUMP_FAILED if what == "backup" else Reason.RESTORE_FAILED
    return AgentError(reason, f"{what}: MySQL error {code}: {message}", permanent=True)


_STDERR_PATTERNS: tuple[tuple[re.Pattern[str], Reason, bool], ...] = (
    (re.compile(r"Access denied|authentication|\(1045\)|\b1045\b|\b1698\b", re.I), Reason.AUTHENTICATION_FAILED, True),
    (
        re.compile(
            # An error number only after "ERROR " (mysql) or "error: " (mysqldump): a bare one can be
            # a line number ("ERROR 1064 (42000) at line 2013: ...").
            r"Can't connect|Unknown (MySQL|MariaDB) server host|Lost connection|gone away|Too many connections|"
            r"(?:ERROR |error: )(?:20(?:0[2356]|13)|1040|1053)\b",
            re.I,
        ),
        Reason.DATABASE_UNAVAILABLE,
        False,
    ),
    (re.compile(r"No space left|disk full|Errcode: 28", re.I), Reason.INSUFFICIENT_STORAGE, False),
)


def from_tool_stderr(stderr: str, code: int, *, tool: str, what: str) -> AgentError:
    for pattern, reason, permanent in _STDERR_PATTERNS:
        if pattern.search(stderr):
            return AgentError(reason, f"{tool} exited with {code}: {tail(stderr)}", permanent=permanent)
    reason = Reason.DUMP_FAILED if what == "backup" else Reason.RESTORE_FAILED
    return AgentError(reason, f"{tool} exited with {code}: {tail(stderr) or 'no output'}", permanent=True)


def from_s3(exc: BaseException, *, what: str, missing_means_not_found: bool) -> AgentError:
    """Classifies an S3, Azure Blob or GCS SDK exception (contract.store.classify, which imports no SDK)."""
    code, _ = store.error_code(exc)
    detail = f"{code or type(exc).__name__}: {getattr(exc, 'message', None) or str(exc)}"
    kind = store.classify(exc)
    if kind == store.ErrorKind.DENIED:
        return AgentError(
            Reason.STORAGE_ACCESS_DENIED, f"{what}: object storage refused access ({detail})", permanent=True
        )
    if kind == store.ErrorKind.FULL:
        return AgentError(Reason.INSUFFICIENT_STORAGE, f"{what}: object storage is full ({detail})", permanent=False)
    if kind == store.ErrorKind.MISSING:
        if missing_means_not_found:
            return AgentError(Reason.BACKUP_NOT_FOUND, f"{what}: backup object not found ({detail})", permanent=True)
        return AgentError(Reason.STORAGE_UNAVAILABLE, f"{what}: bucket not found ({detail})", permanent=True)
    if kind == store.ErrorKind.TIMEOUT:
        return AgentError(Reason.TIMEOUT, f"{what}: object storage timed out ({detail})", permanent=False)
    return AgentError(Reason.STORAGE_UNAVAILABLE, f"{what}: object storage unavailable ({detail})", permanent=False)


def from_os_error(exc: OSError, *, what: str) -> AgentError:
    if exc.errno == errno.ENOSPC:
        return AgentError(Reason.INSUFFICIENT_STORAGE, f"{what}: no space left on device", permanent=False)
    if isinstance(exc, socket.timeout | TimeoutError):
        return AgentError(Reason.TIMEOUT, f"{what}: timed out: {exc}", permanent=False)
    reason = Reason.DUMP_FAILED if what == "backup" else Reason.RESTORE_FAILED
    return AgentError(reason, f"{what}: {type(exc).__name__}: {exc}", permanent=False)
