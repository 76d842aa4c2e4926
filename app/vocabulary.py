"""The shared vocabulary: service roles, event kinds and decisions (a leaf: imports nothing).

Every layer may use these names; none of them depends on how the service is built.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Role(StrEnum):
    """Service roles: who may use which part of the API (mission roles come from the policy)."""

    admin = "admin"
    auditor = "auditor"
    oversight = "oversight"
    integration = "integration"


SERVICE_ROLES: Final = frozenset(role.value for role in Role)


class Kind(StrEnum):
    """What an audit event records (contract section 7)."""

    decision = "decision"
    report = "report"
    admin = "admin"
    login = "login"
    export = "export"
    review = "review"
    policy = "policy"


# Accesses to a case record: asked before (`decision`) or told after (`report`).
ACCESS_KINDS: Final = (Kind.decision.value, Kind.report.value)

ALLOW: Final = "allow"
DENY: Final = "deny"
