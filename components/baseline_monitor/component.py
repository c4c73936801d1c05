"""baseline_monitor: the Model Monitor's baseline of a version."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def baseline_monitor(workspace: str, version: str, metrics: dsl.Output[dsl.Metrics]) -> str:
    """Baseline a registered version for the monitors: feature statistics, model quality, bias and attribution on
    its training set (kept when it exists); returns the baseline's folder.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        version: Registered version, NAME/VERSION (from register_model).
    """
    from kiln.workflow.release_steps import baseline_step
    from kiln.workflow.result import fill

    return fill(baseline_step(workspace, version), metrics=metrics)
