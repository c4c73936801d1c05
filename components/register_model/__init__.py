"""KFP component register_model (see its README)."""
