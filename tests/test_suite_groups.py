"""The suite's worker groups reach pytest-xdist: modules sharing ports or caches really run on one worker."""

from __future__ import annotations

import pytest


def test_this_test_carries_its_group_to_the_scheduler(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup (e.g. -n 0)")
    # loadgroup schedules by the `@group` suffix it adds to the node id; without it, modules split across workers.
    assert request.node.nodeid.endswith(f"@{request.node.path}")

