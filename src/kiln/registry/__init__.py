"""The model registry on MLflow: versions, aliases (champion, challenger), approval, lineage, model cards."""
