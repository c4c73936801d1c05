"""churn_training: data to a served, monitored model, with the promotion gate as a condition."""

from kfp import dsl

from components.compile_model.component import compile_model
from components.explain_model.component import explain_model
from components.publish_artifact.component import publish_artifact
from pipelines._steps import DATA, WORKSPACE, register, serve, train_and_evaluate


@dsl.pipeline(name="churn-training", description="Validate, ingest, build a point-in-time training set, tune, "
              "evaluate; when the gate passes: register, explain, compile and publish for every target, and (unless "
              "deploy is false) deploy by canary and baseline the monitors.")
def churn_training(workspace: str = WORKSPACE, data: str = DATA, model_name: str = "churn", family: str = "lgbm",
                   strategy: str = "hyperband", trials: int = 9, max_iterations: int = 9, max_concurrent: int = 2,
                   seed: int = 7, min_auc: float = 0.70, max_auc_drop: float = 0.01, approve: bool = True,
                   targets: list = ["x86_64", "aarch64", "cuda"],  # noqa: B006 - KFP takes a literal default
                   endpoint: str = "churn",
                   canary_percent: float = 20.0, bake_seconds: float = 60.0, explain_rows: int = 200,
                   deploy: bool = True, entry_point: str = ""):
    """The training pipeline.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores.
        data: Dataset folder to train on.
        model_name: Registered model the new version joins.
        family: Model family to tune: lgbm, xgb or mlp.
        strategy: Search strategy: hyperband, asha, random or bayesian.
        trials: Tuning trials.
        max_iterations: Most boosting rounds (tens) or epochs per trial.
        max_concurrent: Trials at once.
        seed: Seed of the split, the search and the explanations.
        min_auc: Gate: lowest test AUC.
        max_auc_drop: Gate: largest AUC drop against the champion on the same rows.
        approve: Approve the new version when its gate passes.
        targets: Compile targets, one bundle each: x86_64, aarch64, cuda.
        endpoint: Endpoint that serves the new version (created when missing, else a canary rollout).
        canary_percent: A new endpoint's canary step.
        bake_seconds: A new endpoint's canary bake time.
        explain_rows: Held-out rows explained with SHAP.
        deploy: Deploy and baseline the new version: on this machine, or with serving type kserve on the
            cluster (KServe and Istio installed) through the Kubernetes API.
        entry_point: Your own training code instead of a family (a Python file's path as the steps see it, e.g.
            in the workspace): its train(context), predict(model, x) and PARAMS are tuned.
    """
    tuned, evaluated = train_and_evaluate(workspace, data, model_name, family, strategy, trials, max_iterations,
                                          max_concurrent, seed, min_auc, max_auc_drop, entry_point)
    with dsl.If(evaluated.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - a KFP condition
        registered = register(workspace, tuned, model_name, approve)
        explain_model(workspace=workspace, version=registered.outputs["Output"], rows=explain_rows, seed=seed)
        with dsl.ParallelFor(targets, name="targets") as target:
            compiled = compile_model(workspace=workspace, version=registered.outputs["Output"], target=target)
            published = publish_artifact(workspace=workspace, artifact_id=compiled.outputs["Output"])
        with dsl.If(deploy == True, name="deploy"):  # noqa: E712 - a KFP condition
            serve(workspace, registered, endpoint, canary_percent, bake_seconds, after=published)
