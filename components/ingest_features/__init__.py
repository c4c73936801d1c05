"""KFP component ingest_features (see its README)."""
