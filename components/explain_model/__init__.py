"""KFP component explain_model (see its README)."""
