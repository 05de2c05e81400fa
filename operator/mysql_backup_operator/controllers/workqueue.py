"""A delaying, de-duplicating work queue: the operator's one scheduler.

Why not kopf timers: a timer per object wakes 10,000 Backups every few seconds and each tick reads
the API; and a timer's interval is fixed, so "sleep until the next schedule time" (CloudNativePG's
requeue-after) cannot be expressed. Watches (kopf) only *enqueue* keys here; a few worker threads
reconcile them. Semantics follow controller-runtime's workqueue:

- a key is queued at most once; adding it again keeps the earlier due time;
- a key is never processed by two workers at once: if it is added while being processed, it is
  processed again afterwards (so no event is lost and no two steps race on one object);
- the processing function returns the delay after which the key wants to be looked at again
  (a safety net, the next schedule time, a back-off), or None.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

LOG = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], float | None],
        *,
        workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
        name: str = "reconcile",
    ) -> None:
        self._process = process
        self._clock = clock
        self._workers = workers
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}  # queued keys and their due time (heap entries may be stale)
        self._active: set[K] = set()
        self._again: dict[K, float] = {}  # keys added while being processed
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    # ------------------------------------------------------------------ producers

    def add(self, key: K, delay: float = 0.0) -> None:
        """Queue `key` to be processed in `delay` seconds (or earlier, if it is already due earlier)."""
        due = self._clock() + max(0.0, delay)
        with self._cond:
            if key in self._active:
                self._again[key] = min(due, self._again.get(key, due))
                return
            current = self._due.get(key)
            if current is not None and current <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._seq), key))
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)

    def due_in(self, key: K) -> float | None:
        """Seconds until `key` is due, or None when it is not queued (for tests and metrics)."""
        with self._cond:
            d = self._due.get(key)
            return None if d is None else d - self._clock()

    # ------------------------------------------------------------------ consumers

    def pop_due(self, timeout: float | None = None) -> K | None:
        """The next due key (marked active), waiting up to `timeout`; None on timeout or stop."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._stopped:
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded entry
                now = self._clock()
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._active.add(key)
                    return key
                wait = self._heap[0][0] - now if self._heap else None
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def done(self, key: K, requeue: float | None) -> None:
        """Marks `key` processed; requeues it after `requeue` seconds and/or at once if re-added meanwhile."""
        with self._cond:
            self._active.discard(key)
            again = self._again.pop(key, None)
        if again is not None:
            self.add(key, max(0.0, again - self._clock()))
        if requeue is not None:
            self.add(key, requeue)

    def process_one(self, timeout: float | None = None) -> bool:
        """Processes one due key in the calling thread (the worker loop, and synchronous tests)."""
        key = self.pop_due(timeout)
        if key is None:
            return False
        requeue: float | None = None
        try:
            requeue = self._process(key)
        except Exception:
            LOG.exception("%s %s: unexpected error; retrying in 10s", self._name, key)
            requeue = 10.0
        finally:
            self.done(key, requeue)
        return True

    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._loop, name=f"{self._name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _loop(self) -> None:
        while not self._stopped:
            self.process_one()
