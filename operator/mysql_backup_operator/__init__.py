"""mysql-backup-operator: safe MySQL/MariaDB backups and restores on Kubernetes."""

__version__ = "0.1.0"
