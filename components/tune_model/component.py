"""tune_model: automatic model tuning with Ray Tune; every trial an MLflow run."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def tune_model(workspace: str, training_set: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model],
               metrics: dsl.Output[dsl.Metrics], report: dsl.Output[dsl.HTML], family: str = "lgbm",
               strategy: str = "hyperband", trials: int = 9, max_iterations: int = 9, max_concurrent: int = 2,
               seed: int = 7, pipeline_run: str = "", pipeline_run_id: str = "", entry_point: str = ""):
    """Tune a model family on the training set; the best trial's model files become the ``model`` artifact, whose
    metadata names its MLflow run and model URI.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        training_set: The point-in-time training set (from build_training_set).
        family: Model family: lgbm (LightGBM), xgb (XGBoost) or mlp (a small neural network).
        strategy: Search strategy: hyperband, asha, random or bayesian.
        trials: Number of trials (each an MLflow run).
        max_iterations: Most boosting rounds (tens) or epochs a trial may get; hyperband stops weak trials early.
        max_concurrent: Trials that run at once.
        seed: Seed of the search and of the train/valid/test split.
        pipeline_run: The pipeline run's name, tagged on every MLflow run (lineage).
        pipeline_run_id: The pipeline run's id, tagged on every MLflow run (lineage).
        entry_point: Your own training code instead of a family: the path (in the step's file system, e.g. the
            workspace) of a Python file with train(context), predict(model, x) and PARAMS.
    """
    from kiln.workflow.model_steps import tune_step
    from kiln.workflow.result import fill

    fill(tune_step(workspace, training_set.path, model.path, family, strategy, trials, max_iterations, max_concurrent,
                   seed, pipeline_run, pipeline_run_id, entry_point), artifact=model, metrics=metrics, html=report)
