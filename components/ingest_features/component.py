"""ingest_features: the dataset into the Feast feature store."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest_features(workspace: str, dataset: dsl.Input[dsl.Dataset], metrics: dsl.Output[dsl.Metrics]) -> str:
    """Ingest a validated dataset into the feature store (offline history and online values); returns the
    feature service that serves its features.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        dataset: The validated dataset (from validate_data).
    """
    from kiln.workflow.data_steps import ingest_step
    from kiln.workflow.result import fill

    return fill(ingest_step(workspace, dataset.path), metrics=metrics)
