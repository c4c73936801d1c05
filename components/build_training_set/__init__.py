"""KFP component build_training_set (see its README)."""
