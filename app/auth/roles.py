"""Service roles: who may use which part of the API (mission roles come from the policy)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    admin = "admin"
    auditor = "auditor"
    oversight = "oversight"
    integration = "integration"


SERVICE_ROLES = frozenset(role.value for role in Role)
