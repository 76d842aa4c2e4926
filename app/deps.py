"""The dependencies a route declares, as `Annotated` aliases (nothing else lives here).

A route asks for the session it needs: `ReadSessionDep` for one that only reads,
`WriteSessionDep` for one that writes (its one transaction commits before the response is
sent). Role guards: `AdminDep`, `IntegrationDep`, `ReaderDep` (oversight or auditor),
`OversightDep`, `AuditorDep`; `PrincipalDep` for any signed-in caller.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from app.auth.dependencies import current_principal, decision_caller, require, source_ip
from app.auth.principal import Principal
from app.context import AppContext, context_dependency
from app.db import read_session, write_session
from app.vocabulary import Role

ContextDep = Annotated[AppContext, Depends(context_dependency)]
SourceIpDep = Annotated[str | None, Depends(source_ip)]
ReadSessionDep = Annotated[Session, Depends(read_session)]
# scope="function": the dependency's exit (the commit) runs when the handler returns,
# before the response is sent, so an answer never reports work that did not commit.
WriteSessionDep = Annotated[Session, Depends(write_session, scope="function")]

PrincipalDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(require(Role.admin))]
IntegrationDep = Annotated[Principal, Depends(require(Role.integration))]
DecisionCallerDep = Annotated[Principal, Depends(decision_caller)]
ReaderDep = Annotated[Principal, Depends(require(Role.oversight, Role.auditor))]
OversightDep = Annotated[Principal, Depends(require(Role.oversight))]
AuditorDep = Annotated[Principal, Depends(require(Role.auditor))]
PolicyReaderDep = Annotated[Principal, Depends(require(Role.oversight, Role.auditor, Role.admin))]
