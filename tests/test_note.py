"""C2SP signed notes, checkpoints and cosignatures: the specs' own examples, and forgeries."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.ledger import note
from app.ledger.note import Checkpoint, NoteError, NoteSigner, Verifier

# c2sp.org/signed-note, "Example": this vkey verifies this note.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYj"
    "OBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_the_specs_example_note_verifies() -> None:
    verifier = Verifier.from_vkey(SPEC_VKEY)
    assert verifier.vkey == SPEC_VKEY
    text, signed_by = note.open_note(SPEC_NOTE, [verifier])
    assert text == "This is an example message.\n"
    assert signed_by == [verifier]
    with pytest.raises(NoteError, match="does not verify"):
        note.open_note(SPEC_NOTE.replace("example message", "exemplary message"), [verifier])


def test_a_note_by_an_unknown_key_is_refused_and_unknown_signatures_ignored() -> None:
    ours = NoteSigner("log.example/a", Ed25519PrivateKey.generate())
    other = NoteSigner("log.example/b", Ed25519PrivateKey.generate())
    signed = note.sign("hello\n", [other, ours])
    assert note.open_note(signed, [ours.verifier])[1] == [ours.verifier]
    with pytest.raises(NoteError, match="no known key"):
        note.open_note(note.sign("hello\n", [other]), [ours.verifier])
    # Same name, another key: its id differs, so the line is someone else's and ignored.
    impostor = NoteSigner("log.example/a", Ed25519PrivateKey.generate())
    with pytest.raises(NoteError, match="no known key"):
        note.open_note(note.sign("hello\n", [impostor]), [ours.verifier])


def test_checkpoints_round_trip_and_sign_as_c2sp_says() -> None:
    signer = NoteSigner("audit.example/log", Ed25519PrivateKey.generate())
    checkpoint = Checkpoint("audit.example/log", 20852163, bytes(range(32)))
    assert checkpoint.text == (
        "audit.example/log\n20852163\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    )
    signed = note.sign(checkpoint.text, [signer])
    text, _ = note.open_note(signed, [signer.verifier])
    assert Checkpoint.parse(text) == checkpoint
    line = signed.splitlines()[-1]
    assert line.startswith("\u2014 audit.example/log ")
    raw = base64.b64decode(line.split(" ")[-1])
    assert raw[:4] == note.key_id("audit.example/log", 0x01, signer.verifier.public_key
                                  .public_bytes_raw())  # fmt: skip
    signer.private_key.public_key().verify(raw[4:], checkpoint.text.encode())


@pytest.mark.parametrize(
    "text",
    ["origin\n01\nAAAA\n", "origin\n1\n",
     "origin\n1\n" + base64.b64encode(bytes(31)).decode() + "\n",
     "origin\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
     "origin\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n",
     "origin\n1\n" + base64.b64encode(bytes(32)).decode()],
)  # fmt: skip
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_cosignatures_are_timestamped_and_bound_to_the_checkpoint() -> None:
    witness = NoteSigner("witness.example/w1", Ed25519PrivateKey.generate(), note.COSIGNATURE_V1)
    verifier = Verifier.from_vkey(witness.verifier.vkey)
    assert verifier.kind == note.COSIGNATURE_V1
    text = Checkpoint("audit.example/log", 5, bytes(32)).text
    line = witness.signature_line(text, 1679315147)
    raw = base64.b64decode(line.split(" ")[-1])
    assert raw[:4] == verifier.key_id
    assert struct.unpack(">Q", raw[4:12]) == (1679315147,)
    message = b"cosignature/v1\ntime 1679315147\n" + text.encode()
    witness.private_key.public_key().verify(raw[12:], message)
    assert verifier.check(text, raw[4:]) == 1679315147
    other = Checkpoint("audit.example/log", 5, bytes(31) + b"\x01").text
    with pytest.raises(NoteError):
        verifier.check(other, raw[4:])


@pytest.mark.parametrize(
    "vkey",
    ["example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong id
     "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # type 0x02
     "example.com/foo+530d903a", "exa mple+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
     "example.com/foo+zz0d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"],
)  # fmt: skip
def test_malformed_vkeys_are_refused(vkey: str) -> None:
    with pytest.raises(NoteError):
        Verifier.from_vkey(vkey)


@pytest.mark.parametrize(
    "bad",
    ["no signatures\n", "text\n\n", "text\n\nno dash\n", "text\n\n\u2014 name !!!\n",
     "text\n\n\u2014 name " + base64.b64encode(b"abc").decode() + "\n", "text\x07\n\n"],
)  # fmt: skip
def test_malformed_notes_are_refused(bad: str) -> None:
    with pytest.raises(NoteError):
        note.split(bad)
