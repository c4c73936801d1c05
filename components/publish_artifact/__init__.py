"""KFP component publish_artifact (see its README)."""
