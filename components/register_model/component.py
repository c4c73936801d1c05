"""register_model: a new version in the MLflow Model Registry, alias challenger."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_model(workspace: str, model: dsl.Input[dsl.Model], metrics: dsl.Output[dsl.Metrics],
                   model_name: str = "churn", approve: bool = True, pipeline_run: str = "",
                   pipeline_run_id: str = "") -> str:
    """Register the evaluated model as a new version with alias challenger, its lineage and gate result as tags;
    returns NAME/VERSION.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        model: The evaluated model (from tune_model, after evaluate_model).
        model_name: Registered model to add the version to.
        approve: Approve the version when its gate passed (otherwise it waits for `kiln models approve`).
        pipeline_run: The pipeline run's name, tagged on the version (lineage).
        pipeline_run_id: The pipeline run's id, tagged on the version (lineage).
    """
    from kiln.workflow.model_steps import register_step
    from kiln.workflow.result import fill

    return fill(register_step(workspace, model_name, dict(model.metadata), approve, pipeline_run, pipeline_run_id),
                metrics=metrics)
