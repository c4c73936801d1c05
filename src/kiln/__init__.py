"""Kiln: SageMaker's machine-learning lifecycle on open-source engines, on your own Kubernetes."""

__version__ = "0.1.0"
