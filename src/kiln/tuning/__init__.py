"""Automatic model tuning on Ray Tune: Hyperband, ASHA, random and Bayesian search, warm start, resume."""
