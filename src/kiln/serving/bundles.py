"""The compiled bundle a TVM variant serves: the model version's newest bundle for this machine, checked, or one
compiled for it when there is none (what `kiln compile --target <this machine>` makes)."""

from __future__ import annotations

import platform
from pathlib import Path

from kiln.compile.bundle import verify_bundle
from kiln.compile.compiler import CompileOptions, compile_version
from kiln.compile.keys import load_public_key, public_key_path
from kiln.compile.store import compiled_root, find_artifact
from kiln.errors import InputError
from kiln.progress import Progress, no_progress
from kiln.registry.versions import get_version
from kiln.workspace import Workspace


def host_target() -> str:
    """The compile target this machine's CPU runs."""
    machine = platform.machine()
    if machine not in ("x86_64", "aarch64"):
        raise InputError(f"runtime tvm: no compile target runs on this machine ({machine})")
    return machine


def bundle_for(ws: Workspace, model: str, progress: Progress = no_progress) -> str:
    """The id of a bundle of ``model`` (models:/NAME/VERSION) that runs here: the one its version's
    ``kiln.compiled.<target>`` tag names when it is present and passes its checks, else a new one compiled now."""
    target = host_target()
    info = get_version(ws, model)
    tagged = info.tags.get(f"kiln.compiled.{target}", "").split(" ")[0]
    if tagged and (compiled_root(ws) / tagged).is_dir():
        verdict = verify_bundle(find_artifact(ws, tagged), load_public_key(public_key_path(ws)))
        if verdict.ok:
            return tagged
        progress(f"bundle {tagged} of {info.name}/{info.version} is not served: {'; '.join(verdict.problems)}")
    progress(f"compiling {info.name}/{info.version} for {target} (runtime tvm; no usable bundle yet)")
    return compile_version(ws, f"models:/{info.name}/{info.version}", CompileOptions(target=target), progress).id


def bundle_path(ws: Workspace, artifact_id: str) -> Path:
    """Where a bundle a variant serves lies."""
    return find_artifact(ws, artifact_id)
