"""What an asynchronous endpoint's front reads (ASYNC.json), written by the deploy beside the endpoint's state."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kiln.serving.async_scaler import ScalerConfig


@dataclass(frozen=True)
class AsyncFrontConfig:
    """ASYNC.json: what the front of an asynchronous endpoint reads."""

    endpoint: str
    broker_url: str
    queue: str  # its name on the broker (kiln.serving.async_queue)
    store: str
    store_endpoint_url: str | None
    max_payload_bytes: int
    token_env: str | None  # the variable holding the bearer token requests need
    scaler: ScalerConfig | None  # None on a cluster, where KEDA scales the workers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> AsyncFrontConfig:
        data = json.loads(path.read_text())
        scaler = data.pop("scaler")
        return cls(**data, scaler=ScalerConfig(**scaler) if scaler else None)
