"""KFP component tune_model (see its README)."""
