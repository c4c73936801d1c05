"""compile_model: one target per call (TVM), into a signed bundle."""

from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def compile_model(workspace: str, version: str, target: str, bundle: dsl.Output[dsl.Model],
                  metrics: dsl.Output[dsl.Metrics]) -> str:
    """Compile a registered version for one target with Apache TVM (ONNX export, build, parity check where the
    target runs here) into a signed bundle; returns the bundle's artifact id.

    Args:
        workspace: Folder of the Kiln workspace; its kiln.yaml names the stores (MLflow, Feast, capture).
        version: Registered version, NAME/VERSION (from register_model).
        target: Target: x86_64, aarch64 or cuda.
    """
    from kiln.workflow.release_steps import compile_step
    from kiln.workflow.result import fill

    return fill(compile_step(workspace, version, target, bundle.path), artifact=bundle, metrics=metrics)
