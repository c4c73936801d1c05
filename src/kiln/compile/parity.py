"""Parity: the compiled library's outputs against ONNX Runtime's on the same rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from kiln.errors import ParityFailed

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from kiln.compile.runner import CompiledModel

TOLERANCE = 1e-5


@dataclass
class Parity:
    rows: int
    max_abs_diff: float
    worst_row: int
    tolerance: float = TOLERANCE

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def onnx_runtime_outputs(graph: "onnx.ModelProto", x: "np.ndarray") -> "np.ndarray":
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return cast("np.ndarray", session.run(None, {session.get_inputs()[0].name: x})[0])


def check_parity(graph: "onnx.ModelProto", compiled: "CompiledModel", x: "np.ndarray") -> Parity:
    """Every output column on every row of ``x`` (a value's difference relative to its size when above 1); a
    difference above the tolerance raises ParityFailed."""
    import numpy as np

    want = onnx_runtime_outputs(graph, x)
    got = compiled.predict(x)
    scale = np.maximum(1.0, np.abs(want.astype(np.float64)))  # float32 sums of a value in the hundreds differ in ulps
    diff = (np.abs(got.astype(np.float64) - want.astype(np.float64)) / scale).max(axis=1)
    worst = int(diff.argmax()) if len(diff) else 0
    result = Parity(rows=len(x), max_abs_diff=float(diff.max()) if len(diff) else 0.0, worst_row=worst)
    if not np.isfinite(got).all() or not result.passed:
        raise ParityFailed(
            f"compiled outputs differ from ONNX Runtime's: max |diff| {result.max_abs_diff:.3g} > {TOLERANCE:g} "
            f"on row {worst} of {len(x)} (compiled {got[worst].tolist()}, ONNX Runtime {want[worst].tolist()})",
            hint="the artifact was not written")
    return result
