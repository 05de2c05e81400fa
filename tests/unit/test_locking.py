from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st
from mysql_backup_operator.api import Reason
from mysql_backup_operator.k8s.locking import Decision, Operation, decide


def op(n: int, kind: str = "Backup") -> Operation:
    return Operation(created=f"2026-01-01T00:00:{n:02d}Z", kind=kind, namespace="ns", name=f"o{n}", uid=f"u{n}")


def test_free_lock_goes_to_the_earliest_waiter() -> None:
    waiting = [op(1), op(2), op(3)]
    assert decide(me=op(1), holder=None, holder_alive=False, waiting=waiting).acquire
    d = decide(me=op(3), holder=None, holder_alive=False, waiting=waiting)
    assert not d.acquire and d.reason == Reason.QUEUED_BEHIND and d.blocker == "Backup ns/o1" and d.position == 3


def test_live_holder_blocks_and_is_named() -> None:
    d = decide(me=op(2), holder=op(9, "Restore").identity, holder_alive=True, waiting=[op(2)])
    assert not d.acquire and d.reason == Reason.DATABASE_BUSY and d.blocker == "Restore ns/o9"


def test_lock_is_reentrant_after_restart() -> None:
    assert decide(me=op(5), holder=op(5).identity, holder_alive=True, waiting=[op(1)]).acquire


def test_stale_holder_is_reclaimed() -> None:
    assert decide(me=op(1), holder=op(0).identity, holder_alive=False, waiting=[op(1)]).acquire


@given(st.lists(st.integers(min_value=0, max_value=59), min_size=1, max_size=12, unique=True))
def test_exactly_one_waiter_may_take_a_free_lock(ns: list[int]) -> None:
    waiting = [op(n) for n in ns]
    winners = [w for w in waiting if decide(me=w, holder=None, holder_alive=False, waiting=waiting).acquire]
    assert winners == [min(waiting)]


@given(st.lists(st.integers(min_value=0, max_value=59), min_size=1, max_size=12, unique=True))
def test_nobody_acquires_while_a_live_holder_exists(ns: list[int]) -> None:
    waiting = [op(n) for n in ns]
    holder = Operation("2025", "Restore", "ns", "r", "ur").identity
    assert not any(decide(me=w, holder=holder, holder_alive=True, waiting=waiting).acquire for w in waiting)


def test_acquire_reads_the_live_queue_only_to_take_a_free_lock() -> None:
    from mysql_backup_operator.k8s.locking import LeaseLock, acquire

    from tests.unit.fakes import FakeCoordination

    lock = LeaseLock(FakeCoordination(), "sys")
    asked: list[int] = []

    def live(*ops: Operation) -> Callable[[], list[Operation]]:
        def read() -> list[Operation]:
            asked.append(1)
            return list(ops)

        return read

    def take(me: Operation, confirm: Callable[[], list[Operation]], alive: bool = True) -> Decision:
        return acquire(
            lock, db_key="k", identity_note="db", me=me, waiting=[me], is_alive=lambda _: alive, confirm=confirm
        )

    # Free, but the live queue has an earlier waiter the cache did not: wait for it.
    d = take(op(2), live(op(1), op(2)))
    assert not d.acquire and d.reason == Reason.QUEUED_BEHIND and d.blocker == "Backup ns/o1" and asked == [1]
    assert lock.holder("k")[0] is None
    assert take(op(1), live(op(1), op(2))).acquire and lock.holder("k")[0] == op(1).identity
    asked.clear()
    # Held by a live operation, or already ours (a restart): no live read at all.
    assert not take(op(2), live()).acquire
    assert take(op(1), live()).acquire
    assert asked == []
