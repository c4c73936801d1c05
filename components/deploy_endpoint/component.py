"""deploy_endpoint: a new endpoint, or a canary rollout on an existing one (KServe)."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy_endpoint(workspace: str, version: str, endpoint: str = "churn", canary_percent: float = 20.0,
                    bake_seconds: float = 60.0, promote_champion: bool = True, override_reason: str = "") -> str:
    """Serve a registered version: a new endpoint starts with it; an existing endpoint rolls it out by canary under
    its guardrails (a rollback fails the step). On this machine, or with serving type kserve on the cluster through the
    Kubernetes API. Only an Approved version that passed the gate serves in production unless override_reason says
    why another may. Returns the endpoint's predict URL.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        version: Registered version, NAME/VERSION (from register_model).
        endpoint: Endpoint name.
        canary_percent: Share of traffic the canary takes first (a new endpoint's policy).
        bake_seconds: Watch time of the canary before promotion (a new endpoint's policy).
        promote_champion: Make the version the registry's champion once it serves (it must be approved).
        override_reason: Serve a version that is not Approved or failed the gate, saying why (recorded on the version
            and in the endpoint's history); empty: no override, such a version fails the step.
    """
    from kiln.workflow.release_steps import deploy_step
    from kiln.workflow.result import fill

    return fill(deploy_step(workspace, endpoint, version, canary_percent, bake_seconds, promote_champion,
                            override_reason))
