"""Submit a pipeline run to a KFP API server (the cluster's Kubeflow Pipelines) with kfp.Client."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kiln.errors import ServiceError
from kiln.workflow.ir import compile_pipeline

EXPERIMENT = "kiln"


def submit(host: str, pipeline: Any, params: dict[str, Any], experiment: str = EXPERIMENT,
           workspace_pvc: str | None = None, secret_env: Sequence[str] = ()) -> dict[str, Any]:
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
        except Exception as exc:
            raise _service_error(host, exc) from exc
    run_id = result.run_id
    return {"host": host, "run_id": run_id, "experiment": experiment, "pipeline": pipeline.name,
            "url": f"{host.rstrip('/')}/#/runs/details/{run_id}", "parameters": params}


def _service_error(host: str, exc: Exception) -> ServiceError:
    return ServiceError(f"KFP API server at {host}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                        hint="check the URL (the ml-pipeline service, e.g. port-forwarded to "
                             "http://localhost:8888) and that you may reach it")


def upload(host: str, package: Path, name: str, version: str, description: str = "") -> dict[str, Any]:
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
    except Exception as exc:
        raise _service_error(host, exc) from exc
    return {"host": host, "pipeline": name, "pipeline_id": pipeline_id, "version": version, "action": action,
            "url": f"{host.rstrip('/')}/#/pipelines/details/{pipeline_id}"}
