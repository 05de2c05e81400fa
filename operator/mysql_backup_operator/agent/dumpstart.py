"""Telling a dump (or a restore's client) that never connected from one that is working.

Why this exists: a connection attempt whose SYN goes unanswered (a network blip, a node's
conntrack or NAT dropping one flow) hangs mariadb-dump for about two minutes, the kernel's SYN
retries, and mariadb-dump has no `--connect-timeout`. The Job's default backoffLimit is 0, so
one lost SYN used to fail the backup and, for a pre-restore backup, the Restore behind it
(`PreRestoreBackupFailed`). A dump that has not produced a byte has changed nothing anywhere, so
it can be started again; once its first byte is out it is never restarted (the stream has then
reached the store).

`first_output` waits for the dump's first byte while watching the dump's own TCP sockets in
/proc: a socket still in SYN_SENT after `stall` seconds means the connection is not coming.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import IO, cast

# /proc/net/tcp's `st` column (include/net/tcp_states.h).
_TCP_SYN_SENT = "02"

# What mariadb-dump and mysqldump print when they never got a connection (errmsg.h: 2002 socket,
# 2003 TCP, 2005 unknown host; 2013 during the greeting). Access denied is not among them:
# retrying it only locks accounts.
# mariadb-dump says "Got error: 2002: ...", mysql "ERROR 2002 (HY000): ..."; a bare number could be
# a line number ("at line 2003").
_CONNECT_FAILURE = re.compile(
    r"Can't connect|Unknown (MySQL|MariaDB) server host|(?:ERROR |error: )200[235]\b|"
    r"reading initial communication packet",
    re.I,
)


class FirstOutput(StrEnum):
    OUTPUT = "output"  # the dump is streaming
    EXITED = "exited"  # it ended without a byte: its exit code and stderr tell why
    STALLED = "stalled"  # its connection stayed in SYN_SENT for `stall` seconds


def is_connect_failure(stderr: str) -> bool:
    return bool(_CONNECT_FAILURE.search(stderr))


def _link(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed since the listing (the listing's own descriptor, for one)
        return ""


def connecting(pid: int, *, proc_root: str = "/proc") -> bool:
    """Whether one of the process's own TCP sockets is still waiting for the server's SYN-ACK."""
    base = Path(proc_root) / str(pid)
    try:
        fds = os.listdir(base / "fd")
    except OSError:  # the process is gone, or not ours
        return False
    inodes = {
        link[len("socket:[") : -1]
        for link in map(_link, (base / "fd" / fd for fd in fds))
        if link.startswith("socket:[")
    }
    if not inodes:
        return False
    for table in ("tcp", "tcp6"):
        try:
            rows = (base / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == _TCP_SYN_SENT and fields[9] in inodes:
                return True
    return False


def first_output(
    proc: subprocess.Popen[bytes],
    *,
    stall: float,
    poll_every: float = 0.5,
    is_connecting: Callable[[int], bool] = connecting,
    clock: Callable[[], float] = time.monotonic,
) -> FirstOutput:
    """Blocks until the dump's stdout has a byte (left unread) or its end, or until its
    connection has stalled."""
    stdout = cast(IO[bytes], proc.stdout)
    poller = select.poll()
    poller.register(stdout.fileno(), select.POLLIN | select.POLLHUP)
    stalled_since: float | None = None
    while True:
        if poller.poll(int(poll_every * 1000)):
            # peek: the bytes stay in the reader's buffer for the stream that follows.
            return FirstOutput.OUTPUT if stdout.peek(1) else FirstOutput.EXITED  # type: ignore[attr-defined]
        if is_connecting(proc.pid):
            stalled_since = clock() if stalled_since is None else stalled_since
            if clock() - stalled_since >= stall:
                return FirstOutput.STALLED
        else:
            stalled_since = None
