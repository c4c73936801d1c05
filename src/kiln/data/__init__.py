"""Datasets: the churn demo generator, CSV import, the dataset layout and its validation."""
