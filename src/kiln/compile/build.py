"""TVM Relax: an ONNX graph imported at a fixed batch size, compiled for a target, linked as a shared library."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.compile.targets import CompileTarget
from kiln.compile.tuning import apply, lower, tuning_target
from kiln.errors import EnvironmentProblem, InputError

if TYPE_CHECKING:
    import onnx
    import tvm

INPUT = "features"


class CompileFailed(InputError):
    """The graph did not import or compile for the target; the message names the operator or stage."""


@dataclass
class BuiltLibrary:
    batch: int
    path: Path
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def import_graph(graph: "onnx.ModelProto", batch: int, width: int) -> "tvm.IRModule":
    """The ONNX graph as a Relax module with the batch fixed; an operator TVM lacks is named in the error."""
    from tvm import relax

    unsupported = unsupported_operators(graph)
    if unsupported:
        raise CompileFailed(f"the ONNX graph uses operator(s) TVM's ONNX frontend does not take: "
                            f"{', '.join(unsupported)}", hint="export the model with standard ONNX operators")
    try:
        return relax.frontend.onnx.from_onnx(graph, shape_dict={INPUT: [batch, width]}, keep_params_in_input=False)
    except Exception as exc:  # noqa: BLE001 - TVM raises plain errors; the message names the operator
        raise CompileFailed(f"TVM could not import the ONNX graph: {_first_line(exc)}") from None


def unsupported_operators(graph: "onnx.ModelProto") -> list[str]:
    """Operators of the graph outside what TVM's ONNX frontend converts (other domains included)."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    out = []
    for node in graph.graph.node:
        domain = node.domain or "ai.onnx"
        name = node.op_type if domain == "ai.onnx" else f"{domain}.{node.op_type}"
        if (domain != "ai.onnx" or node.op_type not in known) and name not in out:
            out.append(name)
    return out


def compile_module(mod: "tvm.IRModule", target: CompileTarget) -> Any:
    """The Relax module compiled for ``target``: CPU targets with TVM's default pipeline, CUDA with dlight's."""
    import tvm

    tvm_target = target.tvm_target()
    try:
        if target.name == "cuda":
            return _compile_cuda(mod, tvm_target)
        return tvm.compile(mod, target=tvm_target)
    except CompileFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - TVM's own errors, converted at this boundary
        raise CompileFailed(f"TVM could not compile for {target.name}: {_first_line(exc)}") from None


GPU_RULES = (("Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback"),
             # dlight's GEMV rule fails an assertion on some batch-1 shapes (the tree graphs): schedule without it
             ("Matmul", "Reduction", "GeneralReduction", "Fallback"),
             ("Fallback",))


def _compile_cuda(mod: "tvm.IRModule", tvm_target: Any) -> Any:
    """dlight's GPU schedules, the full set first, then smaller sets if one of its rules fails on a shape."""
    import tvm
    from tvm import relax
    from tvm.s_tir import dlight as dl

    with tvm_target:
        lowered = relax.get_pipeline("zero")(mod)
    failure: Exception | None = None
    for names in GPU_RULES:
        try:
            with tvm_target:
                scheduled = dl.ApplyDefaultSchedule(*(getattr(dl.gpu, name)() for name in names))(lowered)
            return tvm.compile(scheduled, target=tvm_target)
        except Exception as exc:  # noqa: BLE001 - try the next, smaller rule set
            failure = exc
    raise CompileFailed(f"no GPU schedule compiled: {_first_line(failure or RuntimeError('unknown'))}")


def export_library(executable: Any, target: CompileTarget, path: Path) -> None:
    """Link the compiled module into one shared library (cross-compiled for other machines)."""

    kwargs: dict[str, Any] = {}
    if target.cross_compiler:
        if shutil.which(target.cross_compiler) is None:
            raise EnvironmentProblem(f"the {target.name} target needs the cross compiler {target.cross_compiler}",
                                     hint="apt-get install -y gcc-aarch64-linux-gnu (make setup does it)")
        from tvm.support import cc

        kwargs["fcompile"] = cc.cross_compiler(target.cross_compiler)
    executable.export_library(str(path), **kwargs)


def build_library(graph: "onnx.ModelProto", width: int, batch: int, target: CompileTarget,
                  path: Path, tuning_dir: Path | None = None) -> BuiltLibrary:
    """Import, compile and link ``graph`` at ``batch`` rows for ``target`` into ``path`` (with the tuned
    schedules of ``tuning_dir`` where it has them)."""
    started = time.monotonic()
    mod = import_graph(graph, batch, width)
    if tuning_dir is not None:
        tvm_target = tuning_target(target)
        mod = apply(lower(mod, tvm_target), tvm_target, tuning_dir)
    executable = compile_module(mod, target)
    export_library(executable, target, path)
    details = inspect_cuda(executable, path.with_suffix(".cu"), target.gpu_arch or "") if target.name == "cuda" else {}
    return BuiltLibrary(batch=batch, path=path, seconds=time.monotonic() - started, details=details)


def inspect_cuda(executable: Any, source_path: Path, gpu_arch: str) -> dict[str, Any]:
    """The CUDA kernels of a build: their names, their source beside the library, and a fatbin nvcc made of it.

    The wheel's CUDA code generator embeds kernel source only (no CUDA runtime is linked here), so nvcc compiling
    it for the target's architecture is what shows the kernels build for the GPU.
    """

    import tvm
    from tvm.support import nvcc

    modules, source = [executable.mod], ""
    while modules:
        module = modules.pop()
        if module.kind == "cuda":
            source += module.inspect_source("")
        modules.extend(module.imports)
    kernels = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', source)
    kernels = list(dict.fromkeys(kernels))  # each is declared, then defined
    if not kernels:
        raise CompileFailed("the CUDA build holds no kernels", hint="the graph's operators got no GPU schedule")
    source_path.write_text(source)
    details: dict[str, Any] = {"kernels": kernels, "source": source_path.name, "gpu_arch": gpu_arch}
    if shutil.which("nvcc") is None:
        details["fatbin"] = None
        details["note"] = "nvcc is not on PATH: the kernels were not compiled to a fatbin"
        return details
    try:
        with tvm.target.Target({"kind": "cuda", "arch": gpu_arch}):
            binary = nvcc.compile_cuda(source, target_format="fatbin", arch=gpu_arch, compiler="nvcc")
    except Exception as exc:  # noqa: BLE001 - nvcc's own error text
        raise CompileFailed(f"nvcc could not compile the CUDA kernels for {gpu_arch}: {_first_line(exc)}") from None
    fatbin = source_path.with_suffix(".fatbin")
    fatbin.write_bytes(bytes(binary))
    details["fatbin"] = fatbin.name
    return details


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # TVM's messages end with the useful line after a traceback of C++ frames
    return (lines[-1] if lines else type(exc).__name__)[:500]
