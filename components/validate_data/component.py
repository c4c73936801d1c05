"""validate_data: the first step of every pipeline."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_data(workspace: str, data: str, dataset: dsl.Output[dsl.Dataset], metrics: dsl.Output[dsl.Metrics]):
    """Validate a dataset folder (schema, types, ranges, keys) and hand a copy on as the pipeline's dataset.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        data: Dataset folder, as `kiln data generate` or `kiln data import` writes it.
    """
    from kiln.workflow.data_steps import validate_step
    from kiln.workflow.result import fill

    fill(validate_step(workspace, data, dataset.path), artifact=dataset, metrics=metrics)
