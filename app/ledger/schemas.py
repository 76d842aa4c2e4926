"""Response bodies of the integrity endpoints, and the reasons of a logged event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from app.ledger.canonical import format_timestamp


class ReasonRead(BaseModel):
    """A deny reason: its stable code and a message for people."""

    code: str
    message: str
    data: dict[str, Any] | None = Field(
        None,
        description="the facts behind the reason, e.g. the expired module and its date",
        examples=[{"module": "data_handling", "expired_on": "2026-05-01"}],
        # Left out when a reason has none (e.g. one logged before reasons carried it).
        exclude_if=lambda value: value is None,
    )


def explain(codes: Sequence[str], details: Mapping[str, Any]) -> list[ReasonRead]:
    """Reason codes with their messages (from `details["reasons"]`, else the code itself).

    The ledger hashes the codes in `reasons` and the messages inside `details`.
    """
    messages: dict[str, str] = {}
    data: dict[str, dict[str, Any]] = {}
    recorded = details.get("reasons")
    if isinstance(recorded, list):
        for reason in recorded:
            if isinstance(reason, dict) and isinstance(reason.get("message"), str):
                messages[str(reason.get("code"))] = reason["message"]
                if isinstance(reason.get("data"), dict):
                    data[str(reason.get("code"))] = reason["data"]
    return [
        ReasonRead(code=code, message=messages.get(code, code), data=data.get(code))
        for code in codes
    ]


class VerificationRead(BaseModel):
    """The outcome of a verification; `problem` names the first break in one line."""

    valid: bool
    checked: int = Field(description="events whose hash and link were verified")
    head_seq: int | None = Field(description="the log's last event (null for an empty log)")
    head_hash: str | None
    first_invalid_seq: int | None = Field(
        description="the lowest seq at which the log is not what was signed and chained"
    )
    problem: str | None = Field(examples=["hash mismatch at seq 17", "gap in seq: 41 follows 39"])
    checkpoints_checked: int = Field(
        description="checkpoints in the range (each one's signature and hash are checked)"
    )


class SignedCheckpoint(BaseModel):
    """A signed head; the signature covers the message of docs/integrity.md built from these."""

    model_config = ConfigDict(from_attributes=True)

    seq: int
    hash: str
    signed_at: datetime = Field(description="`YYYY-MM-DDTHH:MM:SS.ffffffZ`, as signed")
    key_id: str
    signature: str = Field(description="Ed25519, base64")

    @field_serializer("signed_at")
    def _signed_at(self, value: datetime) -> str:
        return format_timestamp(value)


class PublicKeyRead(BaseModel):
    """A public key that signs (or once signed) checkpoints and export manifests."""

    model_config = ConfigDict(from_attributes=True)

    key_id: str = Field(description="first 16 hex digits of SHA-256 of the raw 32-byte key")
    public_key_pem: str
    created_at: datetime | None = Field(description="when it was published; null if not yet")
    current: bool = Field(default=False, description="the key that signs now")

    @field_serializer("created_at")
    def _created_at(self, value: datetime | None) -> str | None:
        return format_timestamp(value) if value is not None else None


class ConsistencyProofRead(BaseModel):
    """RFC 9162 §2.1.4 PROOF(old_size, D[0:new_size]): the tree of `old_size` is a prefix
    of the tree of `new_size` (empty when old is 0 or equal to new)."""

    model_config = ConfigDict(from_attributes=True)

    old_size: int
    new_size: int
    hashes: list[str] = Field(
        description="base64 SHA-256 hashes, in the RFC's order",
        examples=[["fO3ZTdbr2ZbJyU8WJ3vHRcJBYmt9j5qAY3zUs3k7u8U="]],
    )


class InclusionProofRead(BaseModel):
    """RFC 9162 §2.1.3 PATH(index, D[0:tree_size]) for one event, with the signed
    checkpoint of that size (a C2SP signed note) to check the root against."""

    model_config = ConfigDict(from_attributes=True)

    seq: int
    index: int = Field(description="the leaf index: seq - 1")
    tree_size: int
    leaf_hash: str = Field(description="base64 SHA-256(0x00 || the event's canonical bytes)")
    hashes: list[str] = Field(description="base64, from the leaf's sibling up to the root")
    checkpoint: str = Field(description="the signed checkpoint note of `tree_size`")
