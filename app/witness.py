"""An independent witness (C2SP `tlog-witness`, `tlog-cosignature/v1` Ed25519), meant to run
on the oversight office's own machine: `access-audit witness serve`.

It holds its own key and its own state (per log origin: the size and root it last
cosigned, in a JSON file written atomically before it answers). `POST /add-checkpoint`
takes `old <size>`, the consistency proof from that size, a blank line and the log's
checkpoint; the witness checks the log's signature and that the new tree extends the one
it cosigned, and answers with its cosignature line, or with the spec's status: 400 bad
request (also `old` beyond the checkpoint), 403 no valid signature of a known log key,
404 unknown origin, 409 `old` is not the size it cosigned (the body says that size, as
`text/x.tlog.size`), 422 a proof that does not verify, a different root for the same
size, or an empty tree whose root is not SHA-256 of nothing. It never cosigns two
different trees of one size, nor a smaller tree after a larger one.

Standard library HTTP (one request at a time per origin under a lock): a witness sees a
request every few seconds per log, not a flood.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.ledger.merkle import EMPTY_ROOT, HASH_SIZE, ProofError, verify_consistency
from app.ledger.note import COSIGNATURE_V1, Checkpoint, NoteError, NoteSigner, Verifier, open_note

log = logging.getLogger("access_audit.witness")

SIZE_TYPE: Final = "text/x.tlog.size"
MAX_BODY: Final = 64 * 1024
MAX_PROOF: Final = 63


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The witness's Ed25519 key (PKCS#8 PEM), created readable by its owner only if missing."""
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)
        log.warning("created a new witness key at %s", path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"{path} is not an Ed25519 private key")
    return key


class Witness:
    """The witness's rules and state; `add_checkpoint` answers one request."""

    def __init__(
        self,
        name: str,
        key: Ed25519PrivateKey,
        state_file: Path,
        logs: Sequence[Verifier],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = NoteSigner(name, key, kind=COSIGNATURE_V1)
        self._logs: dict[str, list[Verifier]] = {}
        for verifier in logs:
            self._logs.setdefault(verifier.name, []).append(verifier)
        self._state_file = state_file
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, bytes]] = {}
        if state_file.exists():
            for origin, entry in json.loads(state_file.read_text()).items():
                self._state[origin] = (int(entry["size"]), base64.b64decode(entry["root"]))

    @property
    def vkey(self) -> str:
        return self.signer.verifier.vkey

    def cosigned(self, origin: str) -> tuple[int, bytes]:
        """(size, root) of the latest checkpoint cosigned for `origin` ((0, empty) if none)."""
        return self._state.get(origin, (0, EMPTY_ROOT))

    def add_checkpoint(self, body: bytes) -> Answer:
        try:
            old, proof, note = _parse(body)
            text, _ = _split_checkpoint(note)
            checkpoint = Checkpoint.parse(text)
        except (ValueError, UnicodeDecodeError) as exc:
            return Answer(400, f"bad request: {exc}\n")
        known = self._logs.get(checkpoint.origin)
        if known is None:
            return Answer(404, f"unknown log origin {checkpoint.origin!r}\n")
        try:
            open_note(note, known)
        except NoteError as exc:
            return Answer(403, f"no valid signature of a known key of the log: {exc}\n")
        if old > checkpoint.size:
            return Answer(400, "the old size is beyond the checkpoint's size\n")
        with self._lock:
            size, root = self.cosigned(checkpoint.origin)
            if old != size:
                return Answer(409, f"{size}\n", SIZE_TYPE)
            if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
                return Answer(422, "the empty tree's root is SHA-256 of nothing\n")
            if old == checkpoint.size and checkpoint.root != root:
                log.error("%s: two roots for size %d: a fork", checkpoint.origin, old)
                return Answer(422, f"a different root for size {old}: refused\n")
            try:
                verify_consistency(old, checkpoint.size, root, checkpoint.root, proof)
            except ProofError as exc:
                log.error("%s: %d -> %d not consistent: %s", checkpoint.origin, old,
                          checkpoint.size, exc)  # fmt: skip
                return Answer(422, f"the consistency proof does not verify: {exc}\n")
            self._persist(checkpoint.origin, checkpoint.size, checkpoint.root)
            line = self.signer.signature_line(text, int(self._clock()))
        return Answer(200, line)

    def _persist(self, origin: str, size: int, root: bytes) -> None:
        """Write the new state durably before answering (a crash never rolls it back)."""
        state = {**self._state, origin: (size, root)}
        data = {o: {"size": s, "root": base64.b64encode(r).decode()} for o, (s, r) in state.items()}
        directory = self._state_file.parent
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".witness-state-")
        try:
            with os.fdopen(descriptor, "w") as out:
                json.dump(data, out, indent=2, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self._state_file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._state = state


def _parse(body: bytes) -> tuple[int, list[bytes], str]:
    """`old N`, the proof lines and the checkpoint note of a request body."""
    text = body.decode("utf-8")
    head, separator, note = text.partition("\n\n")
    if not separator:
        raise ValueError("the proof ends with an empty line before the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old ") or not first[4:].isdigit() or first[4:] != str(int(first[4:])):
        raise ValueError("the first line is `old <size>` without leading zeroes")
    old = int(first[4:])
    if len(lines) - 1 > MAX_PROOF:
        raise ValueError(f"more than {MAX_PROOF} proof lines")
    proof = []
    for line in lines[1:]:
        try:
            value = base64.b64decode(line, validate=True)
        except binascii.Error as exc:
            raise ValueError("a proof line is one base64 hash") from exc
        if len(value) != HASH_SIZE:
            raise ValueError("a proof line is one base64 hash")
        proof.append(value)
    return old, proof, note


def _split_checkpoint(note: str) -> tuple[str, str]:
    at = note.find("\n\n")
    if at < 0:
        raise ValueError("the checkpoint's signatures follow a blank line")
    return note[: at + 1], note[at + 2 :]


def serve(witness: Witness, host: str, port: int) -> None:
    """Serve `POST /add-checkpoint` until interrupted."""
    server = make_server(witness, host, port)
    log.warning("witness %s listening on http://%s:%d", witness.signer.name, host, port)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def make_server(witness: Witness, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if self.path != "/add-checkpoint":
                self._answer(Answer(404, "not found\n"))
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._answer(Answer(411, "a Content-Length is required\n"))
                return
            if int(length) > MAX_BODY:
                self._answer(Answer(413, "the request is too large\n"))
                self.close_connection = True
                return
            self._answer(witness.add_checkpoint(self.rfile.read(int(length))))

        def do_GET(self) -> None:
            self._answer(Answer(405, "POST /add-checkpoint\n"))

        def _answer(self, answer: Answer) -> None:
            data = answer.body.encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            log.info("%s %s", self.address_string(), format % args)

    return ThreadingHTTPServer((host, port), Handler)
