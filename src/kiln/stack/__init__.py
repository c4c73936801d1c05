"""The local stack: services a user looks at (MLflow UI, ...), started as local processes."""

from kiln.process import ServiceSpec, ServiceState, start, status, stop
from kiln.stack.services import local_services

__all__ = ["ServiceSpec", "ServiceState", "local_services", "start", "status", "stop"]
