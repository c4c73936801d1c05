"""Compiled libraries loaded on this machine: rows in, probabilities out, in chunks of the compiled batch sizes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

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

    def __init__(self, libraries: dict[int, Path]) -> None:
        import tvm
        import tvm_ffi
        from tvm import relax

        self.device = tvm.cpu()
        self.functions: dict[int, Any] = {}
        self.inputs: dict[int, tuple[Any, Any]] = {}  # batch -> (numpy buffer, the same memory as a TVM tensor)
        for batch, path in sorted(libraries.items()):
            vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), self.device)
            self.functions[batch] = vm["main"]
        self.large = max(self.functions)
        self._from_dlpack = tvm_ffi.from_dlpack

    def _buffer(self, batch: int, width: int) -> tuple[Any, Any]:
        pair = self.inputs.get(batch)
        if pair is None or pair[0].shape[1] != width:
            array = aligned_empty((batch, width))
            pair = self.inputs[batch] = (array, self._from_dlpack(array))
        return pair

    def run_batch(self, batch: int, x: "np.ndarray") -> "np.ndarray":
        """Exactly ``batch`` rows through that batch size's function: [batch, 2] probabilities."""
        import numpy as np

        array, tensor = self._buffer(batch, x.shape[1])
        array[...] = x
        out = self.functions[batch](tensor)
        out = out[0] if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else out
        return np.from_dlpack(out).copy()  # a copy: the next call may reuse the output's memory
    def predict(self, x: "np.ndarray") -> "np.ndarray":
        """[N, 2] probabilities for any N: full large batches, then the rest padded or one by one."""
        import numpy as np

        x = np.ascontiguousarray(x, dtype=np.float32)
        parts, start, n = [], 0, len(x)
        while n - start >= self.large:
            parts.append(self.run_batch(self.large, x[start:start + self.large]))
            start += self.large
        rest = n - start
        if rest >= SMALL_REMAINDER and self.large > 1:
            padded = np.zeros((self.large, x.shape[1]), dtype=np.float32)
            padded[:rest] = x[start:]
            parts.append(self.run_batch(self.large, padded)[:rest])
        else:
            parts += [self.run_batch(1, x[i:i + 1]) for i in range(start, n)]
        return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.float32)
