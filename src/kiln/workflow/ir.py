"""Compile a pipeline to KFP IR YAML (what the KFP UI uploads) and check what the UI needs of it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kiln.errors import InputError
from kiln.files import staged_file
from kiln.workspace import CLUSTER_WORKSPACE

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SECRET_ENV = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?):([-._a-zA-Z0-9]+)=([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass
class CompiledPipeline:
    """A compiled pipeline file as checked: its steps' images and volume mounts, and what it was compiled with."""

    pvc_mounts: dict[str, list[str]]
    pipeline: str
    components: int
    executors: int
    images: list[str]
    sdk: str
    schema: str
    workspace_pvc: str | None = None
    secret_env: list[str] = field(default_factory=list)
    file: str = ""


def compile_pipeline(pipeline: Any, out: Path, workspace_pvc: str | None = None,
                     secret_env: Sequence[str] = ()) -> CompiledPipeline:
    """Write ``pipeline`` as IR YAML at ``out`` (written whole or not at all) and check it; a summary back.

    With ``workspace_pvc``, every step mounts that PersistentVolumeClaim at /kiln/workspace in the cluster (the
    chart's workspace volume, where kiln.yaml is); each ``secret_env`` entry `SECRET:KEY=ENV` gives every step the
    Secret's key as an environment variable (passwords stay in the cluster's Secrets, never in the pipeline file).
    """
    from kfp import compiler

    if out.is_dir() or out.suffix not in (".yaml", ".yml"):
        raise InputError(f"-o {out}: give a file name ending in .yaml")
    if not out.parent.is_dir():
        raise InputError(f"-o {out}: folder {out.parent} does not exist")
    if workspace_pvc is not None and (len(workspace_pvc) > 63 or not DNS_LABEL.match(workspace_pvc)):
        raise InputError(f"--workspace-pvc '{workspace_pvc}': not a PersistentVolumeClaim name",
                         hint="lower-case letters, digits and dashes, at most 63, e.g. kiln-workspace")
    secrets = [_parse_secret_env(item) for item in secret_env]
    kept = _platform_spec(pipeline)
    try:
        if workspace_pvc is not None or secrets:
            _configure_everywhere(pipeline, workspace_pvc, secrets)
        # The temporary name ends in .yaml too: KFP's compiler picks the format by extension.
        with staged_file(out, suffix=out.suffix) as stage:
            compiler.Compiler().compile(pipeline, str(stage))
            summary = check_ir(stage)
    finally:
        pipeline.platform_spec.CopyFrom(kept)  # the pipeline object is shared: leave it as it was
    summary.workspace_pvc, summary.secret_env, summary.file = workspace_pvc, list(secret_env), str(out)
    return summary


def _parse_secret_env(item: str) -> tuple[str, str, str]:
    m = SECRET_ENV.match(item)
    if not m:
        raise InputError(f"--secret-env '{item}': expected SECRET:KEY=ENV, e.g. kiln-postgresql:password=PGPASSWORD")
    return m.group(1), m.group(3), m.group(4)


def _platform_spec(pipeline: Any) -> Any:
    from kfp.pipeline_spec import pipeline_spec_pb2

    kept = pipeline_spec_pb2.PlatformSpec()
    kept.CopyFrom(pipeline.platform_spec)
    return kept


def _configure_everywhere(pipeline: Any, pvc: str | None, secrets: list[tuple[str, str, str]]) -> None:
    """kfp-kubernetes' PVC mount and Secret env on every executor of the pipeline, nested ones (ParallelFor, If)
    included."""

    from google.protobuf import json_format
    from kfp import kubernetes

    # kfp-kubernetes writes executor config into a task's platform_config; the pipeline's tasks were created when its
    # module was imported, so the config is built on a bare holder here and merged into each executor.
    holder = SimpleNamespace(platform_config={})
    if pvc is not None:
        kubernetes.mount_pvc(holder, pvc_name=pvc, mount_path=CLUSTER_WORKSPACE)
    for secret, key, env in secrets:
        kubernetes.use_secret_as_env(holder, secret_name=secret, secret_key_to_env={key: env})
    added = holder.platform_config["kubernetes"]
    executors = pipeline.pipeline_spec.deployment_spec["executors"]
    platform = pipeline.platform_spec.platforms["kubernetes"].deployment_spec.executors
    for name in executors:
        existing = json_format.MessageToDict(platform[name]) if name in platform else {}
        merged = {**existing}
        for key, entries in added.items():
            merged[key] = [*existing.get(key, []), *entries]
        platform[name].update(merged)


def check_ir(path: Path) -> CompiledPipeline:
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
    mounted = _pvc_mounts(documents[1:], executors)
    return CompiledPipeline(pvc_mounts=mounted, pipeline=spec.pipeline_info.name, components=len(spec.components),
                            executors=len(executors), images=images, sdk=spec.sdk_version,
                            schema=spec.schema_version)


def _pvc_mounts(platform_docs: list[dict[str, Any]], executors: dict[str, Any]) -> dict[str, list[str]]:
    """Each executor's PVC mounts (`name:path`) from the kubernetes platform document; an unknown executor named."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as pb

    out: dict[str, list[str]] = {}
    for doc in platform_docs:
        configured = doc.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
        unknown = sorted(set(configured) - set(executors))
        if unknown:
            raise InputError(f"kubernetes platform config for executors the pipeline lacks: {', '.join(unknown)}")
        for name, cfg in configured.items():
            try:
                json_format.ParseDict(cfg, pb.KubernetesExecutorConfig())
            except json_format.ParseError as exc:
                raise InputError(f"executor {name}: not a valid kfp-kubernetes executor config: {exc}") from None
            out[name] = [f"{m.get('pvcNameParameter', {}).get('runtimeValue', {}).get('constant', m.get('constant'))}"
                         f":{m.get('mountPath')}" for m in cfg.get("pvcMount", [])]
    return out
