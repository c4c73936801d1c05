"""explain_model: SHAP explanations, bias by facet and the model card of a registered version."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def explain_model(workspace: str, version: str, metrics: dsl.Output[dsl.Metrics], explanations: dsl.Output[dsl.HTML],
                  model_card: dsl.Output[dsl.Markdown], rows: int = 200, seed: int = 7):
    """Explain a registered version with SHAP on its held-out rows, report its post-training bias by facet, and
    write its model card.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        version: Registered version, NAME/VERSION (from register_model).
        rows: Held-out rows to explain.
        seed: Seed of the row sample and the explainer.
    """
    from kiln.workflow.model_steps import explain_step
    from kiln.workflow.result import fill

    fill(explain_step(workspace, version, rows, seed), metrics=metrics, html=explanations, markdown=model_card)
