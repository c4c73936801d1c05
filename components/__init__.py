"""Kiln's KFP components (imported by path: see README)."""
