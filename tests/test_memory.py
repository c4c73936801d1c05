"""kiln.memory: memory a burst of allocations grew, freed, goes back to the operating system when asked (glibc keeps
it otherwise, and a long-running server's resident size would stay at its highest)."""

from __future__ import annotations

import os

from kiln.memory import release_freed


def resident_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_freed_after_a_burst_is_returned_when_released() -> None:
    burst = [bytearray(2048) for _ in range(50_000)]  # 100 MiB in heap blocks (each below mmap's threshold)
    for block in burst:
        block[::512] = b"x" * len(block[::512])  # touched: resident
    pin = bytearray(2048)  # allocated after the burst, above it: the heap's top stays in use
    grown = resident_mib()
    del burst
    kept = resident_mib()
    assert kept > grown - 20, "glibc keeps most of a freed burst below a block still in use"
    assert release_freed()
    assert resident_mib() < kept - 60, "released: the freed burst is no longer resident"
    assert pin is not None
