"""KFP component run_monitor (see its README)."""
