"""The targets Kiln compiles for, as TVM target descriptions plus how their libraries are linked."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.errors import InputError

if TYPE_CHECKING:
    import tvm


@dataclass(frozen=True)
class CompileTarget:
    name: str  # what users type and devices ask for: x86_64, aarch64, cuda
    machine: str  # the CPU architecture the library's host code runs on
    cpu: str  # the LLVM CPU the host code is tuned for ("generic" when unknown)
    cross_compiler: str | None  # the C toolchain that links the shared library; None: the host's own
    runs_here: bool  # whether this machine can load and run the library
    gpu_arch: str | None = None  # CUDA compute capability, for the cuda target

    def tvm_target(self) -> "tvm.target.Target":
        import tvm

        host = _llvm(self.machine, self.cpu)
        if self.name == "cuda":
            # 48 KiB: the static shared memory every CUDA GPU since sm_20 gives a block
            return tvm.target.Target({"kind": "cuda", "arch": self.gpu_arch, "max_shared_memory_per_block": 49152},
                                     host=host)
        return tvm.target.Target(host)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "machine": self.machine, "cpu": self.cpu, "gpu_arch": self.gpu_arch}


def _llvm(machine: str, cpu: str) -> dict[str, Any]:
    if machine == "aarch64":
        spec: dict[str, Any] = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    else:
        spec = {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}
    if cpu != "generic":
        spec["mcpu"] = cpu
    return spec


def host_cpu() -> str:
    """The LLVM name of this machine's CPU, so the x86_64 library uses every vector unit it has."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


TARGET_NAMES = ("x86_64", "aarch64", "cuda")
DEFAULT_GPU_ARCH = "sm_80"


def resolve_target(name: str, cpu: str | None = None, gpu_arch: str | None = None) -> CompileTarget:
    """A target by name; ``cpu`` picks the LLVM CPU (x86_64 defaults to this machine's, aarch64 to generic NEON)."""

    if name not in TARGET_NAMES:
        raise InputError(f"unknown target '{name}'", hint=f"choose one of {', '.join(TARGET_NAMES)}")
    if cpu is not None:
        _check_cpu(name, cpu)
    here = platform.machine()
    if name == "aarch64":
        cross = None if here == "aarch64" else "aarch64-linux-gnu-gcc"
        return CompileTarget("aarch64", "aarch64", cpu or "generic", cross, runs_here=here == "aarch64")
    x86_cpu = cpu or (host_cpu() if here == "x86_64" else "generic")
    if name == "cuda":
        arch = gpu_arch or DEFAULT_GPU_ARCH
        if not arch.startswith("sm_") or not arch[3:].isdigit():
            raise InputError(f"--gpu-arch '{arch}': give a CUDA compute capability such as sm_80 or sm_87")
        return CompileTarget("cuda", "x86_64", x86_cpu, None, runs_here=False, gpu_arch=arch)
    return CompileTarget("x86_64", "x86_64", x86_cpu, None, runs_here=here == "x86_64")


def _check_cpu(target: str, cpu: str) -> None:
    from tvm.target import codegen

    triple = "aarch64-linux-gnu" if target == "aarch64" else "x86_64-linux-gnu"
    if cpu != "generic" and not codegen.llvm_is_valid_cpu(cpu, triple):
        raise InputError(f"--cpu '{cpu}' is not a CPU LLVM knows for {triple}",
                         hint="for example skylake-avx512 or x86-64-v3 (x86_64), cortex-a72 or neoverse-n1 (aarch64)")
