"""KFP component compile_model (see its README)."""
