"""publish_artifact: a signed bundle to the edge distribution point."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def publish_artifact(workspace: str, artifact_id: str) -> str:
    """Verify a compiled bundle's signature and hashes, then make it its target's latest for edge devices; returns
    where it was published.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        artifact_id: The bundle's id (from compile_model).
    """
    from kiln.workflow.release_steps import publish_step
    from kiln.workflow.result import fill

    return fill(publish_step(workspace, artifact_id))
