"""Feature Store on Feast: a repo derived from each dataset, ingestion, online reads, training sets."""
