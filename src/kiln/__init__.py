"""Kiln: SageMaker's machine-learning lifecycle on open-source engines, on your own Kubernetes."""

__version__ = "0.1.0"

# The one container image of the platform: every KFP component, the monitor CronJob and the servers run it.
IMAGE = f"kiln:{__version__}"
