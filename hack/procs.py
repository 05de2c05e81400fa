"""Processes as the host sees them in /proc: the one scan the stack script and the e2e fixtures share.

Why a process is named by (pid, start time) and not by its command line: the kubelet restarts a
killed container at once on its first failure (no back-off yet), and the new process has the same
command line as the one just killed. "No process with this command line" is therefore a race the
restart can win, while "this pid with this start time is gone (or a zombie)" is not: the start
time changes whenever the pid is reused, and a zombie has already died, it only waits for its
parent (containerd's shim) to reap it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# States of a process that has died: zombie (not reaped yet) and dead (being reaped).
DEAD_STATES = frozenset("ZXx")


@dataclass(frozen=True)
class Proc:
    """One process: its pid and start time (clock ticks after boot) identify it for good."""

    pid: int
    start: int
    state: str
    cmdline: bytes

    @property
    def path(self) -> Path:
        return PROC / str(self.pid)

    def has(self, *words: bytes) -> bool:
        """Whether every word occurs in the command line (arguments joined by NUL)."""
        return all(w in self.cmdline for w in words)

    def cgroups(self) -> str:
        try:
            return (self.path / "cgroup").read_text()
        except OSError:
            return ""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) from /proc/<pid>/stat; None if the process is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def read(pid: int) -> Proc | None:
    st = _stat(pid)
    if st is None:
        return None
    try:
        cmdline = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return Proc(pid=pid, start=st[1], state=st[0], cmdline=cmdline)


def scan(match: Callable[[Proc], bool] = lambda p: True) -> Iterator[Proc]:
    """Every living process that `match` accepts (zombies have no command line and are skipped)."""
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        p = read(int(entry.name))
        if p is not None and p.state not in DEAD_STATES and match(p):
            yield p


def alive(p: Proc) -> bool:
    """Whether this very process still runs: same pid, same start time, not a zombie."""
    st = _stat(p.pid)
    return st is not None and st[1] == p.start and st[0] not in DEAD_STATES


def kill(procs: list[Proc], sig: int = signal.SIGKILL) -> None:
    """Signals each process if it is still the one that was found (never a reused pid)."""
    for p in procs:
        if alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
