"""The operator's one door to the Kubernetes API (kube.py) and the per-database Lease lock."""
