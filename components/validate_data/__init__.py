"""KFP component validate_data (see its README)."""
