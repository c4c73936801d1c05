"""build_training_set: a point-in-time join of labels and features."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def build_training_set(workspace: str, dataset: dsl.Input[dsl.Dataset], feature_service: str,
                       training_set: dsl.Output[dsl.Dataset], metrics: dsl.Output[dsl.Metrics]):
    """Join each label of the dataset with the feature values known at its label time (Feast), into a parquet
    training set with a lineage file.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        dataset: The validated dataset whose labels are joined (from validate_data).
        feature_service: The Feast feature service whose features are joined (from ingest_features).
    """
    from kiln.workflow.data_steps import training_set_step
    from kiln.workflow.result import fill

    fill(training_set_step(workspace, dataset.path, feature_service, training_set.path), artifact=training_set,
         metrics=metrics)
