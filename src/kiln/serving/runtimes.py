"""Serving runtimes: what serves a variant's model, on a local endpoint and in a cluster.

One plain mapping from a variant's ``runtime`` name to how it is served; every place that chooses by runtime (the
spec's check, a local endpoint's check and its model server, the rendered InferenceService) reads it here.
"""

from __future__ import annotations

import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from kiln.errors import InputError

if TYPE_CHECKING:
    from kiln.serving.runtime import KilnModel


@dataclass(frozen=True)
class Runtime:
    """One serving runtime.

    ``model_class`` is the ``module:Class`` of the kserve.Model a local variant runs, imported only in the model
    server's process (KServe and MLflow take seconds to import); None when a local endpoint cannot serve it, and
    ``not_local`` says why. In a cluster, the InferenceService names ``model_format``, and ``cluster_runtime`` when
    KServe ships no ServingRuntime for it; the served model is named after the endpoint through the environment
    variable ``name_env`` or the flag ``name_flag`` of the runtime's server.
    """

    name: str
    description: str
    model_format: str
    cluster_runtime: str | None = None
    model_class: str | None = None
    not_local: str = ""
    needs_onnx_graph: bool = False  # the model version must hold an ONNX graph (a family that exports one)
    serves_bundle: bool = False  # serves a compiled, signed bundle of the version rather than the version itself
    name_env: str | None = None
    name_flag: str | None = None

    @property
    def local(self) -> bool:
        """Whether a local endpoint can serve it."""
        return self.model_class is not None

    def model_type(self) -> type[KilnModel]:
        """The kserve.Model class a local variant of this runtime runs (imports KServe)."""
        if self.model_class is None:
            raise InputError(f"runtime {self.name}: {self.not_local}")
        return cast("type[KilnModel]", pkgutil.resolve_name(self.model_class))


DEFAULT_RUNTIME = "mlflow"
PUBLIC_KEY_ENV = "KILN_PUBLIC_KEY"  # runtime tvm: the path of the PEM public key its bundle is checked against

MLFLOW = Runtime(
    name="mlflow", description="the version's MLflow pyfunc (any Kiln model)",
    # KServe's own runtime for the format (kserve-mlserver); MLServer names the model from MLSERVER_MODEL_NAME.
    model_format="mlflow", model_class="kiln.serving.runtime:KilnModel", name_env="MLSERVER_MODEL_NAME",
)
ONNX = Runtime(
    name="onnx", description="the version's ONNX graph on ONNX Runtime alone",
    # KServe's own runtime for the format (kserve-tritonserver); Triton names a model after its folder in the model
    # repository, so the ONNX artifact must sit under `<endpoint>/1/model.onnx` there.
    model_format="onnx", model_class="kiln.serving.onnx_model:OnnxModel", needs_onnx_graph=True,
)
TVM = Runtime(
    name="tvm", description="the version compiled by TVM for this machine (a signed bundle, checked when it loads)",
    # KServe ships no TVM runtime: `kiln-tvm` is the chart's ServingRuntime in the endpoints' namespace
    # (servingRuntimes.tvm), running this server on the platform image; the storageUri is the bundle's folder.
    model_format="tvm", cluster_runtime="kiln-tvm", name_flag="--name",
    model_class="kiln.serving.tvm_model:TvmModel", serves_bundle=True,
)

RUNTIMES: dict[str, Runtime] = {r.name: r for r in (MLFLOW, ONNX, TVM)}


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``, or an InputError naming the known ones."""
    if name not in RUNTIMES:
        raise InputError(f"unknown serving runtime '{name}'; choose one of {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def local_runtimes() -> list[str]:
    """The runtimes a local endpoint serves, by name."""
    return [name for name, runtime in RUNTIMES.items() if runtime.local]
