"""Compile a pipeline to KFP IR YAML (what the KFP UI uploads) and check what the UI needs of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.errors import InputError


def compile_pipeline(pipeline: Any, out: Path) -> dict[str, Any]:
    """Write ``pipeline`` as IR YAML at ``out`` (written whole or not at all) and check it; a summary back."""
    from kfp import compiler

    if out.is_dir() or out.suffix not in (".yaml", ".yml"):
        raise InputError(f"-o {out}: give a file name ending in .yaml")
    if not out.parent.is_dir():
        raise InputError(f"-o {out}: folder {out.parent} does not exist")
    stage = out.with_name(f".{out.stem}.tmp{out.suffix}")
    try:
        compiler.Compiler().compile(pipeline, str(stage))
        summary = check_ir(stage)
        stage.replace(out)
    finally:
        stage.unlink(missing_ok=True)
    return {**summary, "file": str(out)}


def check_ir(path: Path) -> dict[str, Any]:
    """Parse the file as a PipelineSpec (unknown fields rejected) and require an image and a command per executor."""
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    if not documents:
        raise InputError(f"{path}: no pipeline in it")
    spec = pipeline_spec_pb2.PipelineSpec()
    try:
        json_format.ParseDict(documents[0], spec)
    except json_format.ParseError as exc:
        raise InputError(f"{path}: not a valid KFP pipeline spec: {exc}") from None
    executors = documents[0].get("deploymentSpec", {}).get("executors", {})
    problems = [f"executor {name}: no {what}" for name, ex in executors.items()
                for what in ("image", "command") if not ex.get("container", {}).get(what)]
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    images = sorted({ex["container"]["image"] for ex in executors.values()})
    return {"pipeline": spec.pipeline_info.name, "components": len(spec.components), "executors": len(executors),
            "images": images, "sdk": spec.sdk_version, "schema": spec.schema_version}
