"""The local asynchronous endpoint's scaler: a worker that cannot start is tried again later and later, not in a
loop, and the reason is kept for `kiln endpoint status`."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from kiln.serving.async_scaler import RETRY_SECONDS, Scaler, ScalerConfig, running_workers


def test_a_worker_that_cannot_start_is_tried_again_after_a_growing_wait(tmp_path: Path) -> None:
    config = ScalerConfig(endpoint="broken", state_dir=str(tmp_path), worker_config=str(tmp_path / "missing.json"),
                          host="127.0.0.1", min=0, max=2, backlog_per_worker=1, idle_seconds=60, env=dict(os.environ))
    scaler = Scaler(config)

    async def steps() -> list[int]:
        seen = []
        for _ in range(3):  # back to back, as a busy queue wakes the scaler
            await scaler.step(backlog=5)
            seen.append(scaler.failed_starts)
        return seen

    started = time.monotonic()
    seen = asyncio.run(steps())
    assert seen == [2, 2, 2], "two workers wanted, both failed, and no start again before the wait is over"
    assert f"--worker-config {tmp_path / 'missing.json'}: not a worker's configuration" in (scaler.problem or "")
    assert f"next start in {RETRY_SECONDS:.0f} s" in scaler.problem and "Traceback" not in scaler.problem
    assert running_workers(tmp_path, "broken") == []
    time.sleep(max(0.0, started + 2 * RETRY_SECONDS - time.monotonic()))
    asyncio.run(scaler.step(backlog=5))
    assert scaler.failed_starts == 4 and f"next start in {2 * RETRY_SECONDS:.0f} s" in (scaler.problem or ""), scaler.problem
