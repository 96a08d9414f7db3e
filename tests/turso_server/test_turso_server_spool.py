"""The reply spool alone: where a reply is held (memory or file), the shared limits, the release."""

from __future__ import annotations

from pathlib import Path

import pytest

from turso_server._errors import SpoolFullError
from turso_server._spool import REPLY_MEMORY, SpoolBudget

KIB = 1024


async def _fill(budget: SpoolBudget, size: int, *, expected: int | None, chunk: int = 64 * KIB) -> bytes:
    spool = budget.spool(expected=expected)
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    for start in range(0, size, chunk):
        await spool.write(data[start : start + chunk])
    await spool.finish()
    read = b"".join([block async for block in spool.chunks()])
    assert read == data
    await spool.aclose()
    return read


async def test_small_replies_stay_in_memory_large_ones_go_to_an_unnamed_file(tmp_path: Path) -> None:
    budget = SpoolBudget(tmp_path / "_spool", memory=4 * REPLY_MEMORY, disk=64 * REPLY_MEMORY)
    small = budget.spool(expected=100)
    await small.write(b"a" * 100)
    assert small.in_memory and small.body() == b"a" * 100
    assert (budget.memory_used, budget.disk_used) == (100, 0)
    await small.aclose()
    await small.aclose()  # idempotent
    assert budget.memory_used == 0

    large = budget.spool(expected=3 * REPLY_MEMORY)
    assert not large.in_memory and budget.disk_used == 3 * REPLY_MEMORY
    for _ in range(3):
        await large.write(b"b" * REPLY_MEMORY)
    assert [p.name for p in (tmp_path / "_spool").iterdir()] == []  # unlinked at once
    assert sum([len(block) async for block in large.chunks()]) == 3 * REPLY_MEMORY
    await large.aclose()
    assert (budget.memory_used, budget.disk_used) == (0, 0)


@pytest.mark.parametrize("expected", [None, 5 * REPLY_MEMORY // 2])
async def test_round_trip_with_and_without_a_length(tmp_path: Path, expected: int | None) -> None:
    budget = SpoolBudget(tmp_path, memory=2 * REPLY_MEMORY, disk=8 * REPLY_MEMORY)
    await _fill(budget, 5 * REPLY_MEMORY // 2, expected=expected)
    await _fill(budget, 1000, expected=None)
    assert (budget.memory_used, budget.disk_used) == (0, 0)


async def test_an_unknown_length_moves_to_disk_when_it_outgrows_memory(tmp_path: Path) -> None:
    budget = SpoolBudget(tmp_path, memory=8 * REPLY_MEMORY, disk=8 * REPLY_MEMORY)
    spool = budget.spool()
    await spool.write(b"c" * (REPLY_MEMORY - 10))
    assert spool.in_memory and budget.memory_used == REPLY_MEMORY - 10
    await spool.write(b"c" * 20)
    assert not spool.in_memory
    assert (budget.memory_used, budget.disk_used) == (0, REPLY_MEMORY + 10)
    await spool.aclose()


async def test_memory_share_full_means_disk_and_both_full_means_spool_full(tmp_path: Path) -> None:
    budget = SpoolBudget(tmp_path, memory=REPLY_MEMORY, disk=2 * REPLY_MEMORY)
    first = budget.spool(expected=REPLY_MEMORY)
    assert first.in_memory
    second = budget.spool(expected=REPLY_MEMORY)  # memory is taken: a file, though it is small
    assert not second.in_memory
    with pytest.raises(SpoolFullError) as refused:
        budget.spool(expected=2 * REPLY_MEMORY)
    assert refused.value.status == 503 and refused.value.headers()["Retry-After"]
    unknown = budget.spool()
    await unknown.write(b"d" * (REPLY_MEMORY // 2))  # disk still has room for this much
    with pytest.raises(SpoolFullError):
        await unknown.write(b"d" * REPLY_MEMORY)
    for spool in (first, second, unknown):
        await spool.aclose()
    assert (budget.memory_used, budget.disk_used) == (0, 0)
