"""Compiled libraries loaded on this machine: rows in, probabilities out, in chunks of the compiled batch sizes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

SMALL_REMAINDER = 8  # fewer leftover rows than this run one at a time; more are padded to the large batch


class CompiledModel:
    """One library per batch size (1 and a large one), as the bundle holds them."""

    def __init__(self, libraries: dict[int, Path]) -> None:
        import tvm
        from tvm import relax

        self.device = tvm.cpu()
        self.functions: dict[int, Any] = {}
        for batch, path in sorted(libraries.items()):
            vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), self.device)
            self.functions[batch] = vm["main"]
        self.large = max(self.functions)

    def run_batch(self, batch: int, x: "np.ndarray") -> "np.ndarray":
        """Exactly ``batch`` rows through that batch size's function: [batch, 2] probabilities."""
        import tvm

        out = self.functions[batch](tvm.runtime.tensor(x, self.device))
        return (out[0] if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else out).numpy()

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
