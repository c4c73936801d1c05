"""Kiln's KFP pipelines (imported by path: see README)."""
