"""Concurrent callers of the same key share one call."""

from __future__ import annotations

import asyncio

import pytest

from streamml.models.single_flight import SingleFlight


async def test_concurrent_callers_of_one_key_share_one_call_and_its_answer() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls: list[str] = []

    async def answer(key: str) -> int:
        calls.append(key)
        started = len(calls)  # which call this is: callers of one key must all get the same
        await asyncio.sleep(0.01)
        return started

    answers = await asyncio.gather(
        *(flight.run(key, lambda key=key: answer(key)) for key in ["a", "a", "b", "a", "b"])  # type: ignore[misc]
    )
    assert sorted(calls) == ["a", "b"]
    assert answers[0] == answers[1] == answers[3]
    assert answers[2] == answers[4] != answers[0]


async def test_a_failed_call_fails_every_caller_and_the_next_caller_calls_again() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise LookupError("registry down")

    outcomes = await asyncio.gather(*(flight.run("k", failing) for _ in range(3)), return_exceptions=True)
    assert [type(o) for o in outcomes] == [LookupError] * 3
    assert calls == 1
    with pytest.raises(LookupError):
        await flight.run("k", failing)
    assert calls == 2


async def test_a_cancelled_caller_leaves_the_call_to_the_others() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(flight.run("k", slow))
    second = asyncio.create_task(flight.run("k", slow))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "done"
    assert first.cancelled()
