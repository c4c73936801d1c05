"""monitor_retrain: monitor an endpoint; on violations retrain, and roll a version that passes the gate out."""

from kfp import dsl

from components.run_monitor.component import run_monitor
from pipelines._steps import DATA, WORKSPACE, register, serve, train_and_evaluate


@dsl.pipeline(name="monitor-retrain", description="Run the monitors over the endpoint's capture; on violations: "
              "validate and ingest the latest data, tune, evaluate; when the gate passes: register, roll out by "
              "canary and baseline the monitors.")
def monitor_retrain(workspace: str = WORKSPACE, endpoint: str = "churn", since: str = "1h", data: str = DATA,
                    model_name: str = "churn", family: str = "lgbm", strategy: str = "hyperband", trials: int = 9,
                    max_iterations: int = 9, max_concurrent: int = 2, seed: int = 7, min_auc: float = 0.70,
                    max_auc_drop: float = 0.01, approve: bool = True, canary_percent: float = 20.0,
                    bake_seconds: float = 60.0):
    """The monitor-and-retrain pipeline.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores.
        endpoint: Endpoint whose capture is monitored and that serves the retrained version.
        since: Monitor window: a duration back from now (15m, 1h, 2d) or an ISO time.
        data: Dataset folder with the latest labelled data to retrain on.
        model_name: Registered model the new version joins.
        family: Model family to tune: lgbm, xgb or mlp.
        strategy: Search strategy: hyperband, asha, random or bayesian.
        trials: Tuning trials.
        max_iterations: Most boosting rounds (tens) or epochs per trial.
        max_concurrent: Trials at once.
        seed: Seed of the split and the search.
        min_auc: Gate: lowest test AUC.
        max_auc_drop: Gate: largest AUC drop against the champion on the same rows.
        approve: Approve the new version when its gate passes.
        canary_percent: The canary step, should the endpoint have to be created.
        bake_seconds: The canary bake time, should the endpoint have to be created.
    """
    monitored = run_monitor(workspace=workspace, endpoint=endpoint, since=since)
    with dsl.If(monitored.outputs["Output"] > 0, name="violations"):
        tuned, evaluated = train_and_evaluate(workspace, data, model_name, family, strategy, trials, max_iterations,
                                              max_concurrent, seed, min_auc, max_auc_drop)
        with dsl.If(evaluated.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - a KFP condition
            registered = register(workspace, tuned, model_name, approve)
            serve(workspace, registered, endpoint, canary_percent, bake_seconds)
