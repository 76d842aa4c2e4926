// "In the log", checked in the browser: an event's canonical form (docs/integrity.md §1),
// its chain hash, its RFC 6962 leaf hash, the C2SP checkpoint's Ed25519 signature under the
// log's verifier key, and the inclusion proof folded per RFC 9162 §2.1.3.2 up to the
// checkpoint's root. WebCrypto only (SHA-256, Ed25519); nothing trusted from the page.
"use strict";

(() => {
  // The fields the chain hashes, in no particular order (the canonical form sorts them).
  const HASHED_FIELDS = [
    "seq", "event_id", "kind", "recorded_at", "occurred_at", "actor", "actor_roles", "action",
    "action_category", "record_type", "record_id", "facility", "purpose", "justification",
    "break_glass", "decision", "reasons", "flags", "source", "client_event_id",
    "policy_version", "workstation", "source_ip", "details",
  ];
  const TIMESTAMPS = new Set(["recorded_at", "occurred_at"]);
  const utf8 = new TextEncoder();

  class ProofError extends Error {}

  function canonicalJSON(value) {
    if (value === null) return "null";
    if (Array.isArray(value)) return "[" + value.map(canonicalJSON).join(",") + "]";
    if (typeof value === "object") {
      const keys = Object.keys(value).sort();
      return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonicalJSON(value[k])).join(",") + "}";
    }
    if (typeof value === "number" && !Number.isSafeInteger(value)) {
      throw new ProofError("the event holds a number the canonical form cannot carry");
    }
    // Strings: JSON.stringify escapes exactly `"`, `\` and U+0000-U+001F (lowercase hex),
    // as the canonical form does; numbers and booleans as their literals.
    return JSON.stringify(value);
  }

  // The API writes `2025-10-04T04:30:00Z`; the canonical form always has six fractional digits.
  function ledgerTime(text) {
    const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$/.exec(text);
    if (!match) throw new ProofError("unexpected timestamp " + text);
    return match[1] + "." + (match[2] || "").padEnd(6, "0") + "Z";
  }

  function canonicalEvent(event) {
    const form = {};
    for (const name of HASHED_FIELDS) {
      if (!(name in event)) throw new ProofError("the event lacks its field " + name);
      let value = event[name];
      if (name === "reasons") value = value.map((r) => (typeof r === "string" ? r : r.code));
      else if (TIMESTAMPS.has(name) && value !== null) value = ledgerTime(value);
      form[name] = value;
    }
    return utf8.encode(canonicalJSON(form));
  }

  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  };
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

  function base64(text) {
    let binary;
    try {
      binary = atob(text);
    } catch {
      throw new ProofError("not base64: " + text.slice(0, 20));
    }
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  }

  // A verifier key `<name>+<8 hex key hash>+<base64(0x01 || 32-byte Ed25519 key)>`.
  async function parseVerifierKey(text) {
    // The name holds no "+"; the base64 key may.
    const parts = /^([^+\s]+)\+([0-9a-f]{8})\+(\S+)$/.exec(text.trim());
    if (!parts) throw new ProofError("the log key is not a signed-note verifier key");
    const [, name, keyHash, encoded] = parts;
    const key = base64(encoded);
    if (key.length !== 33 || key[0] !== 1) throw new ProofError("the log key is not an Ed25519 key");
    const expected = (await sha256(concat(utf8.encode(name + "\n"), key))).slice(0, 4);
    if (hex(expected) !== keyHash) throw new ProofError("the log key's id does not match the key");
    const publicKey = await crypto.subtle.importKey(
      "raw", key.slice(1), { name: "Ed25519" }, false, ["verify"]);
    return { name, keyHash: expected, publicKey, text: text.trim() };
  }

  // A C2SP checkpoint (a signed note): origin, size, root; then its signatures.
  function parseCheckpoint(text) {
    const split = text.indexOf("\n\n");
    if (split < 0) throw new ProofError("the checkpoint is not a signed note");
    const body = text.slice(0, split + 1);
    const lines = body.split("\n");
    if (lines.length < 4 || !/^\d+$/.test(lines[1])) {
      throw new ProofError("the checkpoint's body is not origin, size and root");
    }
    const signatures = text.slice(split + 2).split("\n").filter(Boolean).map((line) => {
      const match = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!match) throw new ProofError("a signature line of the checkpoint is malformed");
      const bytes = base64(match[2]);
      return { name: match[1], keyHash: bytes.slice(0, 4), signature: bytes.slice(4) };
    });
    return {
      body: utf8.encode(body), origin: lines[0], size: Number(lines[1]), root: base64(lines[2]),
      signatures, text,
    };
  }

  async function checkSignature(checkpoint, key) {
    if (checkpoint.origin !== key.name) {
      throw new ProofError("the checkpoint is of " + checkpoint.origin + ", not of " + key.name);
    }
    const mine = checkpoint.signatures.find(
      (s) => s.name === key.name && equal(s.keyHash, key.keyHash));
    if (!mine) throw new ProofError("the checkpoint carries no signature by the log's key");
    const valid = await crypto.subtle.verify(
      { name: "Ed25519" }, key.publicKey, mine.signature, checkpoint.body);
    if (!valid) throw new ProofError("the checkpoint's signature does not verify");
  }

  // RFC 9162 §2.1.3.2: the root from a leaf hash, its index, the tree size and the path.
  async function rootFromInclusion(index, size, leafHash, path) {
    if (index >= size) throw new ProofError("the leaf is outside the tree");
    let fn = index;
    let sn = size - 1;
    let r = leafHash;
    for (const p of path) {
      if (sn === 0) throw new ProofError("the proof is longer than the tree is deep");
      if (fn % 2 === 1 || fn === sn) {
        r = await sha256(concat([1], p, r));
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) {
            fn = Math.floor(fn / 2);
            sn = Math.floor(sn / 2);
          }
        }
      } else {
        r = await sha256(concat([1], r, p));
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new ProofError("the proof is shorter than the tree is deep");
    return r;
  }

  // Every step, in order; the first failure stops the check and says what failed.
  async function verifyEvent(event, proof, checkpointText, keyText) {
    if (!window.crypto || !crypto.subtle) {
      throw new ProofError("this browser offers no WebCrypto here (it needs an https page)");
    }
    const steps = [];
    const bytes = canonicalEvent(event);
    const chained = hex(await sha256(concat(utf8.encode(event.prev_hash), bytes)));
    if (chained !== event.hash) {
      throw new ProofError("the fields shown do not hash to the event's hash");
    }
    steps.push("its fields hash to its chain hash " + event.hash.slice(0, 16) + "…");
    const key = await parseVerifierKey(keyText);
    const checkpoint = parseCheckpoint(checkpointText);
    await checkSignature(checkpoint, key);
    steps.push("the checkpoint of " + checkpoint.size.toLocaleString("en-US") +
               " events is signed by the log key " + hex(key.keyHash));
    if (proof.tree_size !== checkpoint.size || proof.index !== event.seq - 1) {
      throw new ProofError("the proof is for another leaf or another tree size");
    }
    const leaf = await sha256(concat([0], bytes));
    const root = await rootFromInclusion(proof.index, proof.tree_size, leaf,
                                         proof.hashes.map(base64));
    if (!equal(root, checkpoint.root)) {
      throw new ProofError("the inclusion proof does not lead to the checkpoint's root");
    }
    steps.push("its leaf and " + proof.hashes.length +
               " proof hashes lead to the checkpoint's root");
    return { steps, size: checkpoint.size, keyId: hex(key.keyHash), origin: checkpoint.origin };
  }

  window.AuditProof = { verifyEvent, canonicalEvent, parseCheckpoint, ProofError };
})();
