"""Controllers per kind, the work queue that drives them, and the in-memory view of the cluster."""
