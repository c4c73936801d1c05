"""Stretches of steps both pipelines share; each call adds its tasks to the pipeline being defined."""

from typing import Any

from kfp import dsl

from components.baseline_monitor.component import baseline_monitor
from components.build_training_set.component import build_training_set
from components.deploy_endpoint.component import deploy_endpoint
from components.evaluate_model.component import evaluate_model
from components.ingest_features.component import ingest_features
from components.register_model.component import register_model
from components.tune_model.component import tune_model
from components.validate_data.component import validate_data

WORKSPACE = "/kiln/workspace"  # where the chart mounts the workspace settings in a cluster
DATA = WORKSPACE + "/data/churn"


def train_and_evaluate(workspace: Any, data: Any, model_name: Any, family: Any, strategy: Any, trials: Any,
                       max_iterations: Any, max_concurrent: Any, seed: Any, min_auc: Any,
                       max_auc_drop: Any, entry_point: Any = "") -> tuple[Any, Any]:
    """validate -> ingest -> training set -> tune -> evaluate; the tune and evaluate tasks back."""
    validated = validate_data(workspace=workspace, data=data)
    ingested = ingest_features(workspace=workspace, dataset=validated.outputs["dataset"])
    built = build_training_set(workspace=workspace, dataset=validated.outputs["dataset"],
                               feature_service=ingested.outputs["Output"])
    tuned = tune_model(workspace=workspace, training_set=built.outputs["training_set"], family=family,
                       strategy=strategy, trials=trials, max_iterations=max_iterations, max_concurrent=max_concurrent,
                       seed=seed, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                       pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, entry_point=entry_point)
    evaluated = evaluate_model(workspace=workspace, model=tuned.outputs["model"], model_name=model_name,
                               min_auc=min_auc, max_auc_drop=max_auc_drop)
    return tuned, evaluated


def register(workspace: Any, tuned: Any, model_name: Any, approve: Any) -> Any:
    """The tuned model registered as the challenger, tagged with this pipeline run."""
    return register_model(workspace=workspace, model=tuned.outputs["model"], model_name=model_name, approve=approve,
                          pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                          pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)


def serve(workspace: Any, registered: Any, endpoint: Any, canary_percent: Any, bake_seconds: Any,
          after: Any = None) -> Any:
    """deploy (new endpoint, or canary on the existing one) -> baseline the monitors; the deploy task back."""
    deployed = deploy_endpoint(workspace=workspace, version=registered.outputs["Output"], endpoint=endpoint,
                               canary_percent=canary_percent, bake_seconds=bake_seconds)
    if after is not None:
        deployed.after(after)
    baseline_monitor(workspace=workspace, version=registered.outputs["Output"]).after(deployed)
    return deployed
