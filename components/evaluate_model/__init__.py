"""KFP component evaluate_model (see its README)."""
