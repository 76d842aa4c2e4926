"""Who is calling: the principal a verified token names, as the database says now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from app.errors import Forbidden
from app.vocabulary import Role

INTEGRATION_ROLES: Final = frozenset({Role.integration.value})


@dataclass(frozen=True, slots=True)
class Principal:
    """A user (by username) or an integration client (by client_id), with its roles."""

    kind: str
    name: str
    roles: frozenset[str]

    def holding(self, wanted: frozenset[str]) -> Principal:
        """This principal if it holds any of `wanted`, else 403."""
        if self.roles.isdisjoint(wanted):
            raise Forbidden(f"requires one of the roles: {', '.join(sorted(wanted))}")
        return self
