"""Clarify-style checks of data and models: bias metrics by facet, as SageMaker Clarify defines them."""
