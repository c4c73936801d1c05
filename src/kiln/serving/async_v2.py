"""An asynchronous request in the Open Inference Protocol (V2 JSON: `{"inputs": [{name, shape, datatype, data}]}`),
scored in chunks of rows like a V1 request: each input's first dimension is the rows; every chunk goes through the
model's own V2 path, and the answer is one V2 response whose outputs hold every row's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from kiln.serving.async_store import AsyncRequest
from kiln.serving.capture import CaptureRecord, CaptureWriter, now_iso

if TYPE_CHECKING:
    from kiln.serving.runtime import KilnModel


class V2Invalid(ValueError):
    """The body is not a V2 request Kiln can score: the message names the input and what is wrong."""


def is_v2(doc: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(doc, dict) and "inputs" in doc and "instances" not in doc


def _flat(data: Any) -> list[Any]:
    """V2 JSON allows a tensor's data flat or nested by its shape."""
    if not isinstance(data, list):
        return [data]
    return [v for item in data for v in _flat(item)]


def _inputs(doc: dict[str, Any]) -> tuple[list[tuple[str, list[int], str, list[Any]]], int]:
    """Each input as (name, shape, datatype, flat data), checked; and the number of rows they share."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Invalid("a V2 request has a non-empty list 'inputs'")
    out, rows = [], set()
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or not all(k in item for k in ("name", "shape", "datatype", "data")):
            raise V2Invalid(f"inputs[{i}]: a V2 input has name, shape, datatype and data")
        name, shape, datatype = item["name"], item["shape"], item["datatype"]
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise V2Invalid(f"input '{name}': shape must be a list of whole numbers, rows first")
        data = _flat(item["data"])
        if len(data) != math.prod(shape):
            raise V2Invalid(f"input '{name}': shape {shape} holds {math.prod(shape)} values, data has {len(data)}")
        out.append((str(name), shape, str(datatype), data))
        rows.add(shape[0])
    if len(rows) != 1:
        raise V2Invalid(f"the inputs must all have the same number of rows (first dimension); got {sorted(rows)}")
    return out, rows.pop()


def score_v2(model: KilnModel, request: AsyncRequest, doc: dict[str, Any], out: Path, chunk: int,
             capture: CaptureWriter | None, variant: str) -> int:
    """Write the V2 answer to ``out``; the rows scored. V2Invalid names the input, or the rows the model refused."""
    import orjson
    from kserve import InferInput, InferRequest
    from kserve.errors import InvalidInput

    inputs, rows = _inputs(doc)
    answers: dict[str, tuple[str, list[int], list[Any]]] = {}
    for start in range(0, rows, chunk):
        size = min(chunk, rows - start)
        part = [{"name": name, "shape": [size, *shape[1:]], "datatype": datatype,
                 "data": data[start * math.prod(shape[1:]):(start + size) * math.prod(shape[1:])]}
                for name, shape, datatype, data in inputs]
        try:
            response = model.predict(InferRequest(
                model_name=model.name, request_id=f"{request.inference_id}-{start // chunk}",
                infer_inputs=[InferInput(p["name"], p["shape"], p["datatype"], p["data"]) for p in part]))
        except InvalidInput as exc:
            raise V2Invalid(f"rows {start + 1}-{start + size}: {exc}") from None
        outputs = [{"name": o.name, "shape": list(o.shape), "datatype": o.datatype, "data": list(o.data)}
                   for o in response.outputs]
        for o in outputs:
            kept = answers.setdefault(o["name"], (o["datatype"], o["shape"][1:], []))
            kept[2].extend(o["data"])
        if capture is not None and capture.sampled():
            capture.record(CaptureRecord(
                inference_id=f"{request.inference_id}-{start // chunk}", timestamp=now_iso(),
                endpoint=request.endpoint, variant=variant, shadow=False, request=orjson.dumps({"inputs": part}),
                response=orjson.dumps({"model_name": model.name, "outputs": outputs}), status=200, latency_ms=0.0))
    out.write_bytes(orjson.dumps({
        "model_name": model.name, "id": request.inference_id,
        "outputs": [{"name": name, "shape": [rows, *rest], "datatype": datatype, "data": data}
                    for name, (datatype, rest, data) in answers.items()]}))
    return rows
