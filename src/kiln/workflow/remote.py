"""Submit a pipeline run to a KFP API server (the cluster's Kubeflow Pipelines) with kfp.Client."""

from __future__ import annotations

from typing import Any

from kiln.errors import ServiceError

EXPERIMENT = "kiln"


def submit(host: str, pipeline: Any, params: dict[str, Any], experiment: str = EXPERIMENT) -> dict[str, Any]:
    """Create a run of ``pipeline`` on the KFP API server at ``host``; its id and its page back."""
    import warnings

    import kfp

    try:
        with warnings.catch_warnings():  # its notice that it needs KFP 2.0 or later: the chart installs 2.x
            warnings.simplefilter("ignore", FutureWarning)
            client = kfp.Client(host=host)
        result = client.create_run_from_pipeline_func(pipeline, arguments=params, experiment_name=experiment)
    except Exception as exc:  # noqa: BLE001 - connection and API errors of kfp's client become Kiln's
        raise ServiceError(f"KFP API server at {host}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                           hint="check the URL (the ml-pipeline service, e.g. port-forwarded to "
                                "http://localhost:8888) and that you may reach it") from exc
    run_id = result.run_id
    return {"host": host, "run_id": run_id, "experiment": experiment, "pipeline": pipeline.name,
            "url": f"{host.rstrip('/')}/#/runs/details/{run_id}", "parameters": params}
