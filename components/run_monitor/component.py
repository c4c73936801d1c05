"""run_monitor: data quality, drift, model quality, bias and attribution drift over an endpoint's capture."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def run_monitor(workspace: str, metrics: dsl.Output[dsl.Metrics], report: dsl.Output[dsl.HTML],
                endpoint: str = "churn", since: str = "1h") -> int:
    """Run every monitor (Evidently) over the endpoint's captured traffic against the served version's baseline;
    returns the number of violations (the pipeline's condition on retraining).

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        endpoint: Endpoint whose capture is monitored.
        since: Start of the window: a duration back from now (90s, 15m, 1h, 2d) or an ISO time.
    """
    from kiln.workflow.release_steps import monitor_step
    from kiln.workflow.result import fill

    return fill(monitor_step(workspace, endpoint, since), metrics=metrics, html=report)
