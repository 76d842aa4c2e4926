"""C2SP signed notes, checkpoints and Ed25519 cosignatures (c2sp.org/signed-note,
tlog-checkpoint, tlog-cosignature), exactly as specified, so that tools nobody here wrote
can check what the log signs.

A note is a text ending in a newline, a blank line, and signature lines
`— <key name> base64(key ID || signature)`. Key ID = SHA-256(name || 0x0A || type ||
public key)[:4]; type 0x01 is an Ed25519 signature over the text, type 0x04 a timestamped
Ed25519 cosignature: an 8-byte big-endian POSIX time, then the signature over
`cosignature/v1\\ntime <T>\\n` followed by the checkpoint's text. A verifier key (vkey) is
`<name>+<hex key ID>+base64(type || public key)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519: Final = 0x01
COSIGNATURE_V1: Final = 0x04
DASH: Final = "\u2014 "
MAX_SIGNATURES: Final = 64  # the spec asks verifiers to accept at least 16
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class NoteError(ValueError):
    """A note, key or checkpoint that is malformed or does not verify."""


def key_id(name: str, kind: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public_key).digest()[:4]


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


@dataclass(frozen=True)
class Verifier:
    """A known key: its name, type (0x01 or 0x04), id and Ed25519 public key."""

    name: str
    kind: int
    key_id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        parts = vkey.split("+", 2)  # base64 may hold '+'; a name may not
        if len(parts) != 3 or not _valid_name(parts[0]):
            raise NoteError("a vkey is <name>+<hex key id>+<base64 key>")
        name, hex_id, material = parts
        try:
            raw = base64.b64decode(material, validate=True)
            wanted = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError) as exc:
            raise NoteError("a vkey's key id is hex and its key base64") from exc
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1) or len(wanted) != 4:
            raise NoteError("only Ed25519 keys (types 0x01 and 0x04) are supported")
        if key_id(name, raw[0], raw[1:]) != wanted:
            raise NoteError("the vkey's key id does not match its name and key")
        return cls(name, raw[0], wanted, Ed25519PublicKey.from_public_bytes(raw[1:]))

    @classmethod
    def of(cls, name: str, public_key: Ed25519PublicKey) -> Verifier:
        """The Ed25519 (0x01) verifier of `public_key` under `name`."""
        return cls(name, ED25519, key_id(name, ED25519, public_key.public_bytes(*_RAW)), public_key)

    @property
    def vkey(self) -> str:
        material = base64.b64encode(bytes([self.kind]) + self.public_key.public_bytes(*_RAW))
        return f"{self.name}+{self.key_id.hex()}+{material.decode()}"

    def check(self, text: str, signature: bytes) -> int | None:
        """Raise NoteError unless `signature` (without its key id) is this key's over `text`;
        a cosignature's timestamp is returned."""
        message, timestamp = text.encode(), None
        if self.kind == COSIGNATURE_V1:
            if len(signature) != 8 + 64:
                raise NoteError(f"{self.name}: a cosignature is 72 bytes")
            (timestamp,) = struct.unpack(">Q", signature[:8])
            if timestamp >= 1 << 63:
                raise NoteError(f"{self.name}: the cosignature's time is out of range")
            message, signature = cosigned_message(text, timestamp), signature[8:]
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature as exc:
            raise NoteError(f"{self.name}: the signature does not verify") from exc
        return timestamp


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 private key under a name: signs notes (0x01) or cosigns checkpoints (0x04)."""

    name: str
    private_key: Ed25519PrivateKey
    kind: int = ED25519

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise NoteError("a key name is not empty and holds no spaces and no '+'")

    @property
    def verifier(self) -> Verifier:
        public = self.private_key.public_key()
        return Verifier(self.name, self.kind, key_id(self.name, self.kind,
                        public.public_bytes(*_RAW)), public)  # fmt: skip

    def signature_line(self, text: str, timestamp: int | None = None) -> str:
        """The signature line of this key over `text` (a cosignature needs `timestamp`)."""
        if self.kind == COSIGNATURE_V1:
            if timestamp is None or not 0 <= timestamp < 1 << 63:
                raise NoteError("a cosignature needs a POSIX time")
            raw = struct.pack(">Q", timestamp) + self.private_key.sign(
                cosigned_message(text, timestamp)
            )
        else:
            raw = self.private_key.sign(text.encode())
        signature = base64.b64encode(self.verifier.key_id + raw).decode()
        return f"{DASH}{self.name} {signature}\n"


def cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("a note holds no control characters but newlines")


def sign(text: str, signers: Iterable[NoteSigner], timestamp: int | None = None) -> str:
    """The signed note of `text` by `signers`."""
    _check_text(text)
    return text + "\n" + "".join(s.signature_line(text, timestamp) for s in signers)


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes  # without the key id
    line: str


def split(note: str) -> tuple[str, list[Signature]]:
    """The text and the signature lines of a note (NoteError if it is not one)."""
    _check_text(note)
    at = note.rfind("\n\n")
    if at < 0:
        raise NoteError("a note's signatures follow a blank line")
    text, block = note[: at + 1], note[at + 2 :]
    lines = block.split("\n")
    if not lines or lines[-1] != "" or len(lines) < 2:
        raise NoteError("a note has at least one signature line, each ending in a newline")
    signatures: list[Signature] = []
    for line in lines[:-1]:
        if not line.startswith(DASH):
            raise NoteError("a signature line starts with an em dash and a space")
        name, _, encoded = line[len(DASH) :].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise NoteError("a signature is base64") from exc
        if not _valid_name(name) or len(raw) < 5:
            raise NoteError("a signature line names its key and holds its id and signature")
        signatures.append(Signature(name, raw[:4], raw[4:], line + "\n"))
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    return text, signatures


def open_note(note: str, known: Sequence[Verifier]) -> tuple[str, list[Verifier]]:
    """The text of `note` and which of the `known` keys signed it; NoteError if a known key's
    signature fails or none verifies. Signatures of unknown keys are ignored."""
    text, signatures = split(note)
    by_key = {(v.name, v.key_id): v for v in known}
    verified: list[Verifier] = []
    for signature in signatures:
        verifier = by_key.get((signature.name, signature.key_id))
        if verifier is not None:
            verifier.check(text, signature.signature)
            verified.append(verifier)
    if not verified:
        raise NoteError("no known key signed this note")
    return text, verified


@dataclass(frozen=True)
class Checkpoint:
    """The text of a C2SP checkpoint: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(),
                 *self.extensions]  # fmt: skip
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        _check_text(text)
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise NoteError("a checkpoint is at least three non-empty lines")
        origin, size, root, *extensions = lines
        if not size.isdigit() or size != str(int(size)):
            raise NoteError("the tree size is a decimal without leading zeroes")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error as exc:
            raise NoteError("the root hash is base64") from exc
        if len(digest) != 32:
            raise NoteError("the root hash is 32 bytes")
        return cls(origin, int(size), digest, tuple(extensions))
