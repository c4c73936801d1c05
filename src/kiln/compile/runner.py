"""Compiled libraries loaded on this machine: rows in, the model's outputs (probabilities or a value) out, in chunks
of the compiled batch sizes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

SMALL_REMAINDER = 8  # fewer leftover rows than this run one at a time; more are padded to the large batch


ALIGNMENT = 64  # bytes: TVM assumes tensor data this aligned (it vectorizes loads), and refuses less


def aligned_empty(shape: tuple[int, ...]) -> "np.ndarray":
    """A zeroed float32 array whose data starts on an ALIGNMENT boundary."""
    import numpy as np

    size = int(np.prod(shape))
    raw = np.zeros(size + ALIGNMENT // 4, dtype=np.float32)
    start = (-raw.ctypes.data % ALIGNMENT) // 4
    return raw[start:start + size].reshape(shape)


class CompiledModel:
    """One library per batch size (1 and a large one), as the bundle holds them.

    Each batch size has a fixed, aligned input buffer that TVM reads in place, and outputs are read in place
    too: wrapping and copying tensors per call costs more than the model itself at batch 1.
    """

    def __init__(self, libraries: dict[int, Path], outputs: int = 2) -> None:
        import numpy as np
        import tvm
        import tvm_ffi
        from tvm import relax

        self._np = np  # looked up once: at batch 1 every attribute lookup shows in the latency
        self.outputs = outputs  # output columns: 2 (binary), K (multiclass) or 1 (regression)
        self.device = tvm.cpu()
        self.functions: dict[int, Any] = {}
        self.inputs: dict[int, tuple[Any, Any]] = {}  # batch -> (numpy buffer, the same memory as a TVM tensor)
        for batch, path in sorted(libraries.items()):
            vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), self.device)
            self.functions[batch] = vm["main"]
        self.large = max(self.functions)
        self._from_dlpack = tvm_ffi.from_dlpack
        self._tensor_type = tvm.runtime.Tensor

    def _buffer(self, batch: int, width: int) -> tuple[Any, Any]:
        pair = self.inputs.get(batch)
        if pair is None or pair[0].shape[1] != width:
            array = aligned_empty((batch, width))
            pair = self.inputs[batch] = (array, self._from_dlpack(array))
        return pair

    def run_batch(self, batch: int, x: "np.ndarray") -> "np.ndarray":
        """Up to ``batch`` rows through that batch size's function (fewer are padded with zeros): their
        [rows, outputs] answers."""
        array, tensor = self._buffer(batch, x.shape[1])
        rows = len(x)
        array[:rows] = x
        if rows < batch:
            array[rows:] = 0.0
        out = self.functions[batch](tensor)
        if type(out) is not self._tensor_type:  # a tuple of outputs: the model's answer comes first
            out = out[0]
        return self._np.from_dlpack(out)[:rows].copy()  # a copy: the next call may reuse the output's memory

    def predict(self, x: "np.ndarray") -> "np.ndarray":
        """[N, outputs] for any N: full large batches, then the rest padded or one by one."""
        np = self._np
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        if n in self.functions:
            return self.run_batch(n, x)
        parts, start = [], 0
        while n - start >= self.large:
            parts.append(self.run_batch(self.large, x[start:start + self.large]))
            start += self.large
        rest = n - start
        if rest >= SMALL_REMAINDER and self.large > 1:
            parts.append(self.run_batch(self.large, x[start:]))
        else:
            parts += [self.run_batch(1, x[i:i + 1]) for i in range(start, n)]
        answers: NDArray[Any] = np.concatenate(parts) if parts else np.zeros((0, self.outputs), dtype=np.float32)
        return answers
