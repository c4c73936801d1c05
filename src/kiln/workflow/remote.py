"""Submit a pipeline run to a KFP API server (the cluster's Kubeflow Pipelines) with kfp.Client."""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln import __version__
from kiln.errors import ServiceError
from kiln.workflow.ir import compile_pipeline

EXPERIMENT = "kiln"


@dataclass
class SubmittedRun:
    """A run created on a KFP API server, and its page in the KFP UI."""

    host: str
    run_id: str
    experiment: str
    pipeline: str
    url: str
    parameters: dict[str, Any]


@dataclass
class UploadedPipeline:
    """A pipeline uploaded to a KFP API server: created, a new version, or unchanged (that build was there)."""

    host: str
    pipeline: str
    pipeline_id: str
    version: str
    action: str
    url: str


def submit(host: str, pipeline: Any, params: dict[str, Any], experiment: str = EXPERIMENT,
           workspace_pvc: str | None = None, secret_env: Sequence[str] = ()) -> SubmittedRun:
    """Create a run of ``pipeline`` on the KFP API server at ``host``; its id and its page back.

    The pipeline is compiled as `kiln pipeline compile` does, with the workspace volume and Secret env given.
    """

    import kfp

    with tempfile.TemporaryDirectory(prefix="kiln-submit-") as tmp:
        package = Path(tmp) / "pipeline.yaml"
        compile_pipeline(pipeline, package, workspace_pvc, secret_env)
        try:
            with warnings.catch_warnings():  # its notice that it needs KFP 2.0 or later: the chart installs 2.x
                warnings.simplefilter("ignore", FutureWarning)
                client = kfp.Client(host=host)
            result = client.create_run_from_pipeline_package(str(package), arguments=params,
                                                             experiment_name=experiment)
        except Exception as exc:  # connection and API errors of kfp's client become Kiln's
            raise _service_error(host, exc) from exc
    run_id = result.run_id
    return SubmittedRun(host=host, run_id=run_id, experiment=experiment, pipeline=pipeline.name,
                        url=f"{host.rstrip('/')}/#/runs/details/{run_id}", parameters=params)


def _service_error(host: str, exc: Exception) -> ServiceError:
    return ServiceError(f"KFP API server at {host}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                        hint="check the URL (the ml-pipeline service, e.g. port-forwarded to "
                             "http://localhost:8888) and that you may reach it")


def upload(host: str, package: Path, name: str, version: str, description: str = "") -> UploadedPipeline:
    """Upload a compiled pipeline file to the KFP API server: a new pipeline, or a new version of an existing one.

    A version of that name already there is left as it is (uploading the same build twice changes nothing).
    """

    import kfp

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            client = kfp.Client(host=host)
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            created = client.upload_pipeline(str(package), pipeline_name=name, description=description)
            pipeline_id, action = created.pipeline_id, "created"
        else:
            versions = client.list_pipeline_versions(pipeline_id, page_size=200).pipeline_versions or []
            if any(v.display_name == version for v in versions):
                action = "unchanged"
            else:
                client.upload_pipeline_version(str(package), pipeline_version_name=version, pipeline_id=pipeline_id,
                                               description=description)
                action = "new version"
    except Exception as exc:  # connection and API errors of kfp's client become Kiln's
        raise _service_error(host, exc) from exc
    return UploadedPipeline(host=host, pipeline=name, pipeline_id=pipeline_id, version=version, action=action,
                            url=f"{host.rstrip('/')}/#/pipelines/details/{pipeline_id}")


def upload_pipelines(host: str, pipelines: Sequence[Any], workspace_pvc: str | None = None,
                     secret_env: Sequence[str] = (),
                     uploaded: Callable[[UploadedPipeline], None] = lambda _: None) -> list[UploadedPipeline]:
    """Compile each pipeline (as `kiln pipeline compile` does) and upload it; ``uploaded`` hears of each in turn."""
    results = []
    with tempfile.TemporaryDirectory(prefix="kiln-upload-") as tmp:
        for pipeline in pipelines:
            package = Path(tmp) / f"{pipeline.name}.yaml"
            compile_pipeline(pipeline, package, workspace_pvc, secret_env)
            # The version names the Kiln release and the compiled file's content: the same build uploads once.
            digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
            results.append(upload(host, package, pipeline.name, f"{__version__}-{digest}", pipeline.description or ""))
            uploaded(results[-1])
    return results
