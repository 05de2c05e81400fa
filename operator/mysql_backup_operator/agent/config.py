"""The agent's inputs now live in the shared contract (`mysql_backup_operator.contract.config`)."""

from __future__ import annotations

from ..contract.config import AgentConfig, DbConfig, StorageConfig, load

__all__ = ["AgentConfig", "DbConfig", "StorageConfig", "load"]
