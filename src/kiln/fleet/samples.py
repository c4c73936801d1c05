"""Input/output samples devices send back, written to the capture store beside the endpoints' own captures.

Each model's edge traffic is the capture "endpoint" edge-MODEL, with the device as its variant, so the monitors
read device traffic the same way they read an endpoint's.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from kiln.errors import InputError
from kiln.serving.capture import CaptureRecord, CaptureWriter
from kiln.workspace import Workspace

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
FIELDS = {"inference_id": str, "timestamp": str, "artifact": str, "model": str}


def edge_endpoint(model: str) -> str:
    return f"edge-{model}"


def write_samples(ws: Workspace, device: str, body: Any, max_records: int) -> int:
    """Check every record first (nothing is written when one is bad), then append them all and fsync."""

    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list):
        raise InputError("capture: the body must be an object with a list 'records'")
    if len(records) > max_records:
        raise InputError(f"capture: {len(records)} records in one request; at most {max_records}")
    checked: dict[str, list[CaptureRecord]] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(f"capture: records[{i}] must be an object")
        for name, kind in FIELDS.items():
            if not isinstance(rec.get(name), kind):
                raise InputError(f"capture: records[{i}].{name} must be text")
        if not MODEL_NAME.match(rec["model"]):
            raise InputError(f"capture: records[{i}].model '{rec['model'][:80]}' is not a model name")
        try:
            datetime.fromisoformat(rec["timestamp"])
        except ValueError:
            raise InputError(f"capture: records[{i}].timestamp is not an ISO 8601 time") from None
        if "request" not in rec or "response" not in rec:
            raise InputError(f"capture: records[{i}] needs 'request' and 'response'")
        latency = rec.get("latency_ms", 0.0)
        if not isinstance(latency, (int, float)):
            raise InputError(f"capture: records[{i}].latency_ms must be a number")
        checked.setdefault(rec["model"], []).append(CaptureRecord(
            inference_id=rec["inference_id"], timestamp=rec["timestamp"], endpoint=edge_endpoint(rec["model"]),
            variant=device, shadow=False, request=rec["request"], response=rec["response"], status=200,
            latency_ms=float(latency)))
    written = 0
    for model, batch in checked.items():
        writer = CaptureWriter(ws.folder("capture"), edge_endpoint(model), flush_seconds=3600)
        try:
            for rec in batch:
                writer.record(rec)
            written += writer.flush()
        finally:
            writer.close()
    return written
