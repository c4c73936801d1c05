"""The compiled bundle a TVM variant serves: the model version's newest bundle for the machines that serve it,
checked, or one compiled for them when there is none (what `kiln compile --target T` makes). A local variant runs on
this machine; a cluster's runs on its nodes and reads the bundle from the artifacts store (an object store)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from kiln.compile.bundle import MANIFEST, verify_bundle
from kiln.compile.compiler import CompileOptions, compile_version
from kiln.compile.keys import load_public_key, public_key_path
from kiln.compile.store import artifacts_store, compiled_root, find_artifact, store_bundle
from kiln.errors import InputError
from kiln.progress import Progress, no_progress
from kiln.registry.versions import get_version
from kiln.storage import S3Store
from kiln.workspace import Workspace


def host_target() -> str:
    """The compile target this machine's CPU runs."""
    machine = platform.machine()
    if machine not in ("x86_64", "aarch64"):
        raise InputError(f"runtime tvm: no compile target runs on this machine ({machine})")
    return machine


def _kept(ws: Workspace, artifact_id: str) -> bool:
    """Whether the workspace's folder or its artifacts store holds the bundle."""
    return (compiled_root(ws) / artifact_id).is_dir() or artifacts_store(ws).exists(f"compiled/{artifact_id}/{MANIFEST}")


def bundle_for(ws: Workspace, model: str, target: str, progress: Progress = no_progress,
               cpu: str | None = None) -> str:
    """The id of a bundle of ``model`` (models:/NAME/VERSION) for compile target ``target``: the one its version's
    ``kiln.compiled.<target>`` tag names when it is kept, passes its checks and (given ``cpu``) was compiled for that
    CPU, else a new one compiled now (for ``cpu``, or the target's default CPU)."""
    info = get_version(ws, model)
    tagged = info.tags.get(f"kiln.compiled.{target}", "").split(" ")[0]
    if tagged and _kept(ws, tagged):
        folder = find_artifact(ws, tagged)
        verdict = verify_bundle(folder, load_public_key(public_key_path(ws)))
        built_for = json.loads((folder / MANIFEST).read_text())["target"].get("cpu")
        if verdict.ok and cpu in (None, built_for):
            return tagged
        why = "; ".join(verdict.problems) if not verdict.ok else f"it is compiled for CPU {built_for}, not {cpu}"
        progress(f"bundle {tagged} of {info.name}/{info.version} is not served: {why}")
    progress(f"compiling {info.name}/{info.version} for {target}{f' ({cpu})' if cpu else ''} (runtime tvm; no usable "
             f"bundle yet)")
    options = CompileOptions(target=target, cpu=cpu)
    return compile_version(ws, f"models:/{info.name}/{info.version}", options, progress).id


def bundle_path(ws: Workspace, artifact_id: str) -> Path:
    """Where a bundle a variant serves lies."""
    return find_artifact(ws, artifact_id)


def bundle_location(ws: Workspace, model: str, target: str, cpu: str | None = None,
                    progress: Progress = no_progress) -> str:
    """Where a cluster's model servers read a bundle of ``model`` for ``target`` (compiled now if it has none):
    `<artifacts uri>/compiled/<ID>` in the artifacts store, which must be an object store."""
    store = artifacts_store(ws)
    if not isinstance(store, S3Store):
        raise InputError(f"model {model} (runtime tvm): its compiled bundles are kept in {store.root}, which a "
                         f"cluster's model servers cannot read",
                         hint="keep the workspace's artifacts in an object store: set `artifacts: {type: s3, uri: "
                              "s3://BUCKET/artifacts}` in kiln.yaml (the chart does with objectStore.workspaceData)")
    artifact = bundle_for(ws, model, target, progress, cpu)
    prefix = f"compiled/{artifact}"
    if not store.exists(f"{prefix}/{MANIFEST}"):  # compiled while the workspace kept its artifacts in a folder
        progress(f"copying bundle {artifact} to {store.location}/{prefix}")
        store_bundle(store, find_artifact(ws, artifact), prefix)
    return f"{store.location}/{prefix}"
