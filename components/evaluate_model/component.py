"""evaluate_model: the challenger against the champion on the same held-out rows, and the promotion gate."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(workspace: str, model: dsl.Input[dsl.Model], metrics: dsl.Output[dsl.Metrics],
                   curves: dsl.Output[dsl.ClassificationMetrics], gate: dsl.Output[dsl.Markdown],
                   model_name: str = "churn", min_auc: float = 0.70, max_auc_drop: float = 0.01) -> bool:
    """Score the tuned model and the registered champion on the model's held-out rows, measure bias by facet, and
    apply the gate; returns whether the gate passed (the pipeline's condition on registering).

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        model: The tuned model (from tune_model).
        model_name: Registered model whose champion the model is compared with.
        min_auc: Lowest test AUC that passes.
        max_auc_drop: How far below the champion's AUC on the same rows the model may fall.
    """
    from kiln.workflow.model_steps import evaluate_step
    from kiln.workflow.result import fill

    return fill(evaluate_step(workspace, model_name, dict(model.metadata), min_auc, max_auc_drop), metrics=metrics,
                classification=curves, markdown=gate)
