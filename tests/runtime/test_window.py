"""Window: the flow-control window shared by the gRPC stream and the Redis list ingress."""

from __future__ import annotations

import asyncio

from aios_grpc.runtime.window import Window


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_try_acquire_takes_all_or_none():
    window = Window(3)
    assert window.try_acquire(2)
    assert not window.try_acquire(2)  # one free: none taken
    assert window.free == 1
    assert window.try_acquire()
    assert not window.try_acquire()
    window.release(3)
    assert window.try_acquire(3)
    assert window.free == 0


async def test_acquire_takes_a_free_place_without_waiting():
    window = Window(1)
    await window.acquire()
    assert window.free == 0 and window.waiting == 0


async def test_several_waiters_are_woken_in_turn():
    window = Window(1)
    assert window.try_acquire()
    order: list[int] = []

    async def take(i: int) -> None:
        await window.acquire()
        order.append(i)

    tasks = [asyncio.create_task(take(i)) for i in range(3)]
    await _settle()
    assert window.waiting == 3 and order == []
    for expected in ([0], [0, 1], [0, 1, 2]):
        window.release()
        await _settle()
        assert order == expected
    await asyncio.gather(*tasks)
    assert window.free == 0 and window.waiting == 0


async def test_release_wakes_exactly_as_many_as_fit():
    window = Window(3)
    assert window.try_acquire(3)
    done: list[int] = []

    async def take(i: int) -> None:
        await window.acquire()
        done.append(i)

    tasks = [asyncio.create_task(take(i)) for i in range(4)]
    await _settle()
    window.release(2)
    await _settle()
    assert done == [0, 1] and window.waiting == 2 and window.free == 0
    window.release(3)  # two waiters take two places; one stays free
    await _settle()
    assert done == [0, 1, 2, 3] and window.free == 1
    await asyncio.gather(*tasks)


async def test_try_acquire_does_not_overtake_a_waiter():
    window = Window(1)
    assert window.try_acquire()
    waiter = asyncio.create_task(window.acquire())
    await _settle()
    window.release()
    assert not window.try_acquire()  # the freed place went to the waiter
    await waiter
    assert window.free == 0


async def test_a_cancelled_waiter_leaks_no_place():
    window = Window(1)
    assert window.try_acquire()
    cancelled = asyncio.create_task(window.acquire())
    later = asyncio.create_task(window.acquire())
    await _settle()
    cancelled.cancel()
    await _settle()
    assert cancelled.cancelled() and window.waiting == 1
    window.release()
    await later  # the place went past the cancelled waiter
    window.release()
    assert window.free == 1 and window.waiting == 0


async def test_a_waiter_cancelled_after_its_place_was_handed_over_passes_it_on():
    window = Window(1)
    assert window.try_acquire()
    first = asyncio.create_task(window.acquire())
    second = asyncio.create_task(window.acquire())
    await _settle()
    window.release()  # hands the place to `first`, which has not run yet
    first.cancel()
    await _settle()
    assert first.cancelled()
    await second  # `first` gave its place on to `second`
    assert window.free == 0 and window.waiting == 0
    window.release()
    assert window.free == 1
