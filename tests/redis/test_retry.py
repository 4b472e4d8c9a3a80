"""``Retry``: the one retry helper of the Redis loops (no Redis server needed)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from aios_grpc.backoff import Backoff
from aios_grpc.redis.retry import READER_BACKOFF, REDIS_BACKOFF, Retry

FAST = Backoff(0.0001, 0.0001)


def test_the_redis_back_offs_are_the_formulas_they_replace() -> None:
    for n in range(1, 40):
        assert REDIS_BACKOFF.delay(n, jitter=False) == min(2.0, 0.05 * 2 ** min(n, 10))
        assert READER_BACKOFF.delay(n, jitter=False) == min(5.0, 0.1 * 2 ** min(n, 6))


def test_call_retries_transient_errors_until_it_succeeds_and_resets_the_count() -> None:
    outcomes: list[object] = [RedisConnectionError("down"), OSError("reset"), "ok"]

    async def flaky() -> object:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    retry = Retry("test", backoff=FAST)
    assert asyncio.run(retry.call(flaky)) == "ok"
    assert retry.failures == 0


def test_call_gives_up_after_attempts_and_raises_other_errors_at_once() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise RedisConnectionError("down")

    retry = Retry("test", backoff=FAST)
    with pytest.raises(RedisConnectionError):
        asyncio.run(retry.call(down, attempts=5))
    assert (calls, retry.failures) == (5, 5)

    async def wrong_type() -> None:
        raise ResponseError("WRONGTYPE")

    with pytest.raises(ResponseError):
        asyncio.run(retry.call(wrong_type))
    assert retry.failures == 5  # other errors leave the count alone


def test_call_raises_the_transient_error_once_the_deadline_passed() -> None:
    async def main() -> int:
        retry = Retry("test", backoff=Backoff(0.01, 0.01), quiet=True)

        async def down() -> None:
            raise RedisConnectionError("down")

        with pytest.raises(RedisConnectionError):
            await retry.call(down, deadline=asyncio.get_running_loop().time() + 0.05)
        return retry.failures

    assert 2 <= asyncio.run(main()) <= 7


def test_an_attempt_in_async_with_swallows_only_transient_errors() -> None:
    async def main() -> None:
        retry = Retry("test", backoff=FAST)
        async with retry:
            raise RedisConnectionError("down")
        assert retry.failed and retry.failures == 1
        with pytest.raises(ResponseError):
            async with retry:
                raise ResponseError("NOGROUP")
        assert not retry.failed and retry.failures == 1
        async with retry:
            pass
        assert not retry.failed and retry.failures == 0

    asyncio.run(main())


def test_failures_are_logged_on_the_first_and_every_20th(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        retry = Retry("XACK on s", backoff=FAST)
        for _ in range(40):
            await retry.fail(RedisConnectionError("down"))

    with caplog.at_level(logging.WARNING, logger="aios_grpc.redis"):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records] == [
        f"XACK on s: down (retrying, {n} failures in a row)" for n in (1, 20, 40)
    ]
