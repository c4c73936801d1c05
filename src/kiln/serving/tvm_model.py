"""The TVM runtime: a compiled, signed bundle (`kiln compile`) served as a kserve.Model, without MLflow.

load() checks the bundle against the public key it is given (signature, every file's sha256, expiry) and that its
target runs on this machine, and raises BundleRefused naming every problem otherwise: a bad bundle never serves.
Requests are the feature rows the other runtimes take, encoded with the bundle's own encoder, or, on V2, the
bundle's input tensor ("features", FP32 [N, width]).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from kiln.compile.bundle import verify_bundle
from kiln.compile.keys import load_public_key
from kiln.compile.runner import CompiledModel
from kiln.data.task import Task
from kiln.serving.runtime import KilnModel
from kiln.serving.runtimes import PUBLIC_KEY_ENV
from kiln.serving.schema import Column, InputSchema
from kiln.training.encoding import Encoder


class BundleRefused(RuntimeError):
    """The bundle failed its checks (or was built for another machine): the server does not start."""


class TvmModel(KilnModel):
    def load(self) -> bool:
        folder = Path(self.model_uri)
        key = os.environ.get(PUBLIC_KEY_ENV)
        if not key:
            raise BundleRefused(f"no public key to check {folder} against: set {PUBLIC_KEY_ENV}")
        verdict = verify_bundle(folder, load_public_key(Path(key)))
        if not verdict.ok or verdict.manifest is None:
            raise BundleRefused(f"bundle {folder} refused: {'; '.join(verdict.problems)}")
        manifest = verdict.manifest
        target = manifest["target"]
        if target.get("gpu_arch") or target["machine"] != platform.machine():
            raise BundleRefused(f"bundle {verdict.id} is compiled for {target['name']}; this server runs on "
                                f"{platform.machine()}'s CPU")
        model = manifest["model"]
        self.task = Task.from_dict({"kind": model["task"], "classes": model["classes"]})
        self.threshold = float(model["threshold"])
        self.encoder = Encoder.from_dict(json.loads((folder / manifest["input"]["encoder"]).read_text()))
        self.compiled = CompiledModel({int(b): folder / name for b, name in manifest["libraries"].items()},
                                      outputs=len(manifest["output"]["columns"]))
        self.schema = _schema(manifest["input"], self.encoder)
        self.tensor_name, self.width = manifest["input"]["name"], int(manifest["input"]["shape"][1])
        self.version = f"models:/{model['name']}/{model['version']}"
        self.artifact_id = verdict.id
        self.warm()
        self.ready = True
        return self.ready

    def output(self, x: np.ndarray) -> np.ndarray:
        out = self.compiled.predict(x)
        kind = self.task.kind
        return out[:, 1] if kind == "binary" else out[:, 0] if kind == "regression" else out


def _schema(spec: dict[str, Any], encoder: Encoder) -> InputSchema:
    """The model's input columns with their types: the bundle's record of the version's MLflow schema, or, in a
    bundle from before it held one, the encoder's columns (numbers, and text for its categories)."""
    if spec.get("schema"):
        return InputSchema(tuple(Column(c["name"], c["type"]) for c in spec["schema"]))
    return InputSchema(tuple(Column(n, "string" if n in encoder.categories else "double") for n in encoder.order))
