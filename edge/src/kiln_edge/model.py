"""A verified bundle loaded for inference: feature rows encoded as the platform's encoder does, then the TVM
libraries (one per compiled batch size) run on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

SMALL_REMAINDER = 8  # fewer leftover rows than this run one at a time; more are padded to the large batch


class InputProblem(ValueError):
    """A request the model cannot take; the message names the field."""


class Encoder:
    """Numeric columns: missing values become the training median. Text columns: one-hot over known categories."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.numeric: dict[str, float] = spec["numeric"]
        self.categories: dict[str, list[str]] = spec["categories"]
        self.order: list[str] = spec["order"]
        self.width = sum(len(self.categories[n]) if n in self.categories else 1 for n in self.order)

    def encode(self, rows: list[dict[str, Any]]) -> np.ndarray:
        out = np.zeros((len(rows), self.width), dtype=np.float32)
        for r, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InputProblem(f"instances[{r}] must be an object of feature values")
            unknown = sorted(set(row) - set(self.order))
            if unknown:
                raise InputProblem(f"instances[{r}]: unknown feature(s) {', '.join(unknown)}")
            col = 0
            for name in self.order:
                value = row.get(name)
                if name in self.categories:
                    known = self.categories[name]
                    if value is not None and str(value) in known:
                        out[r, col + known.index(str(value))] = 1.0
                    col += len(known)
                    continue
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    value = self.numeric[name]
                elif isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise InputProblem(f"instances[{r}].{name} must be a number")
                out[r, col] = np.float32(float(value))
                col += 1
        return out


class CompiledModel:
    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        import tvm
        from tvm import relax

        self.manifest, self.device = manifest, tvm.cpu()
        self.encoder = Encoder(json.loads((folder / manifest["input"]["encoder"]).read_text()))
        self.functions = {}
        for batch, name in manifest["libraries"].items():
            vm = relax.VirtualMachine(tvm.runtime.load_module(str(folder / name)), self.device)
            self.functions[int(batch)] = vm["main"]
        self.large = max(self.functions)
        self.threshold = float(manifest["model"]["threshold"])
        self.task = manifest["model"].get("task", "binary")  # bundles from before tasks hold binary models
        self.classes = list(manifest["model"].get("classes") or [0, 1])
        self.outputs = int(manifest["output"]["shape"][1])

    def _run(self, batch: int, x: np.ndarray) -> np.ndarray:
        import tvm

        out = self.functions[batch](tvm.runtime.tensor(x, self.device))
        return (out[0] if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else out).numpy()

    def outputs_of(self, x: np.ndarray) -> np.ndarray:
        """[N, outputs] for an encoded float32 matrix of any N: class probabilities, or a value."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        parts, start, n = [], 0, len(x)
        while n - start >= self.large:
            parts.append(self._run(self.large, x[start:start + self.large]))
            start += self.large
        rest = n - start
        if rest >= SMALL_REMAINDER and self.large > 1:
            padded = np.zeros((self.large, x.shape[1]), dtype=np.float32)
            padded[:rest] = x[start:]
            parts.append(self._run(self.large, padded)[:rest])
        else:
            parts += [self._run(1, x[i:i + 1]) for i in range(start, n)]
        return np.concatenate(parts) if parts else np.zeros((0, self.outputs), dtype=np.float32)

    def predict(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The platform's answers: binary probability and prediction; multiclass prediction (a class), its
        probability and each class's; regression prediction (a value)."""
        if not isinstance(rows, list) or not rows:
            raise InputProblem("'instances' must be a non-empty list of feature rows")
        out = self.outputs_of(self.encoder.encode(rows))
        if self.task == "regression":
            return [{"prediction": float(v)} for v in out[:, 0]]
        if self.task == "binary":
            return [{"probability": float(v), "prediction": self.classes[int(v >= self.threshold)]} for v in out[:, 1]]
        answers = []
        for row in out:
            best = int(row.argmax())
            answers.append({"prediction": self.classes[best], "probability": float(row[best]),
                            **{f"probability_{c}": float(v) for c, v in zip(self.classes, row)}})
        return answers

    def smoke_test(self) -> None:
        """Every library runs on the training medians and gives finite answers of the bundle's shape (probabilities
        that sum to 1, for a classifier)."""
        row = {name: self.encoder.numeric.get(name) for name in self.encoder.order}
        for batch in sorted(self.functions):
            x = np.repeat(self.encoder.encode([row]), batch, axis=0)
            out = self._run(batch, x)
            summed = self.task == "regression" or np.allclose(out.sum(axis=1), 1, atol=1e-4)
            if out.shape != (batch, self.outputs) or not np.isfinite(out).all() or not summed:
                raise RuntimeError(f"batch-{batch} library gave {out[:1].tolist()} for the median row")
