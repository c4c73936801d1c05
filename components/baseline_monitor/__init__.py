"""KFP component baseline_monitor (see its README)."""
