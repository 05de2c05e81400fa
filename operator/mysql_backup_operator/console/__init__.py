"""The web console behind `kubectl mysqlbackup ui`: a loopback HTTP server with the user's own credentials.

It never holds credentials of its own: every call is made with the kubeconfig the user
started it with, so Kubernetes RBAC and admission decide what each person may do.
See docs/console.md and docs/design-console.md.
"""
