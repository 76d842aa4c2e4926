"""The trivial endpoint bench/decisions.py measures the service against.

POST /v1/decisions with the service's own request model (`DecisionRequest`: the same
parsing and validation) answering a constant `DecisionResult`: no auth, no database, no
policy. The handler is a plain `def` like the service's, so it runs in the same threadpool.
Served by uvicorn with the options `access-audit serve` uses.
"""

from __future__ import annotations

from fastapi import FastAPI

from app.access.schemas import DecisionRequest, DecisionResult

ANSWER = DecisionResult(
    decision="allow",
    reasons=[],
    seq=1,
    event_id="00000000-0000-4000-8000-000000000000",
    flags=[],
    policy_version="sha256:" + "0" * 64,
)

app = FastAPI(title="trivial decisions")


@app.post("/v1/decisions", response_model=DecisionResult)
def decide(body: DecisionRequest) -> DecisionResult:
    """Parse the request model and answer a constant."""
    return ANSWER
