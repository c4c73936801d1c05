"""Model training: training sets in, reproducible models of a few families out, logged to MLflow."""
