"""Edge Manager's platform side: the distribution point devices pull artifacts from, their heartbeats, and the
input/output samples they send back into the capture store."""
