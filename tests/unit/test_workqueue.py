from __future__ import annotations

from mysql_backup_operator.controllers.workqueue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_keys_are_deduplicated_and_keep_the_earliest_due_time() -> None:
    clock = Clock()
    seen: list[str] = []
    q: WorkQueue[str] = WorkQueue(lambda k: seen.append(k) or None, clock=clock)
    q.add("a", 10)
    q.add("a", 5)
    q.add("a", 30)
    assert len(q) == 1
    assert q.due_in("a") == 5
    assert not q.process_one(timeout=0)
    clock.t = 5
    assert q.process_one(timeout=0)
    assert seen == ["a"]
    assert len(q) == 0


def test_a_key_added_while_processing_is_processed_again_afterwards() -> None:
    clock = Clock()
    seen: list[str] = []
    q: WorkQueue[str] = WorkQueue(lambda k: None, clock=clock)

    def process(k: str) -> float | None:
        seen.append(k)
        if len(seen) == 1:
            q.add(k)  # an event arrives while the first step runs
            assert len(q) == 0  # ... it is not queued twice, and not run concurrently
        return None

    q._process = process
    q.add("a")
    q.process_one(timeout=0)
    q.process_one(timeout=0)
    assert seen == ["a", "a"]


def test_the_returned_delay_requeues_and_errors_back_off() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(lambda k: 42.0 if k == "ok" else 1 / 0, clock=clock)
    q.add("ok")
    q.add("boom")
    q.process_one(timeout=0)
    q.process_one(timeout=0)
    assert q.due_in("ok") == 42.0
    assert q.due_in("boom") == 10.0


def test_earliest_key_first() -> None:
    clock = Clock()
    seen: list[str] = []
    q: WorkQueue[str] = WorkQueue(lambda k: seen.append(k) or None, clock=clock)
    q.add("late", 3)
    q.add("early", 1)
    q.add("now")
    clock.t = 5
    while q.process_one(timeout=0):
        pass
    assert seen == ["now", "early", "late"]
