"""Endpoints: KServe model servers for registered models, request validation, traffic policy, capture."""
