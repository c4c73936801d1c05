"""KFP component deploy_endpoint (see its README)."""
