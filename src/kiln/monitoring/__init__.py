"""Model Monitor: baselines, monitor runs over captured traffic, schedules, alerts and the retraining trigger."""
