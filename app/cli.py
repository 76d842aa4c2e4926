"""The `access-audit` command."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.config import Settings

log = logging.getLogger("access_audit")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # we say what migrating did
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    code: int = args.run(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="access-audit", description="Record-access decisions and a tamper-evident audit log."
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the API (migrates an empty database first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log a line per HTTP request (off: paths name case records and actors)",
    )
    serve.set_defaults(run=_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema to head")
    migrate.set_defaults(run=_migrate)

    users = sub.add_parser("users", help="manage users").add_subparsers(metavar="ACTION")
    add = users.add_parser("add", help="create a user (bootstraps the first admin)")
    add.add_argument("username")
    add.add_argument("--role", action="append", required=True, dest="roles")
    add.add_argument("--facility", action="append", default=[], dest="facilities")
    add.add_argument("--volunteer", action="store_true")
    add.add_argument("--full-name")
    add.add_argument("--password", help="the password, or - to read it from stdin")
    add.set_defaults(run=_users_add)

    demo = sub.add_parser("demo", help="load a year of realistic demo data (empty database)")
    demo.add_argument(
        "--if-empty",
        action="store_true",
        help="skip loading when the database already has users; print logins",
    )
    demo.add_argument("--seed", type=int, default=2025)
    demo.add_argument("--scale", type=float, default=1.0, help="multiply the daily volume")
    demo.set_defaults(run=_demo)

    policy = sub.add_parser("policy", help="check or test a policy folder")
    policy_sub = policy.add_subparsers(metavar="ACTION")
    check = policy_sub.add_parser("check", help="validate a policy folder")
    check.add_argument("dir", nargs="?", type=Path)
    check.set_defaults(run=_policy_check)
    cases = policy_sub.add_parser("test", help="run the decision cases in DIR/tests/")
    cases.add_argument("dir", nargs="?", type=Path)
    cases.set_defaults(run=_policy_test)
    propose = policy_sub.add_parser(
        "propose",
        help="send a policy folder (and its decision cases) to a running service as a "
        "proposal for oversight to approve",
    )
    propose.add_argument("dir", type=Path)
    propose.add_argument("--authority", required=True, help="the order that authorises it")
    propose.add_argument("--effective-from", metavar="RFC3339", help="default: at approval")
    propose.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    propose.add_argument(
        "--username", help="an admin's username (the password is asked, or read from stdin)"
    )
    propose.add_argument("--password", help="the password, or - to read it from stdin")
    propose.add_argument("--token", help="a bearer token instead (default $AUDIT_TOKEN)")
    propose.set_defaults(run=_policy_propose)

    replay = sub.add_parser(
        "replay",
        help="judge every logged decision and report again under the version it records "
        "(exit 1 on any difference)",
    )
    replay.add_argument("--since", metavar="RFC3339", help="occurred at or after")
    replay.add_argument("--until", metavar="RFC3339", help="occurred before")
    replay.set_defaults(run=_replay)

    export = sub.add_parser("export", help="write the events CSV (recorded as an export event)")
    export.add_argument("--out", required=True, type=Path, help="the CSV file to write")
    export.add_argument("--manifest", type=Path, help="also write the signed manifest (JSON)")
    for name in EXPORT_FILTERS:
        export.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=name.upper())
    export.set_defaults(run=_export)

    verify = sub.add_parser(
        "verify", help="check the chain and its signed checkpoints (exit 1 on the first break)"
    )
    verify.add_argument("--from-seq", type=int, metavar="N", help="first seq to check")
    verify.add_argument("--to-seq", type=int, metavar="N", help="last seq to check")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.add_argument(
        "--public-key",
        action="append",
        type=Path,
        metavar="PEM",
        help="trust only this checkpoint key, not the keys the database publishes "
        "(repeat for rotated keys)",
    )
    verify.add_argument(
        "--log-vkey",
        action="append",
        metavar="VKEY",
        help="trust only this log key (signed-note vkey, as `log info` prints it) for tree and "
        "chain checkpoints alike, whatever the database publishes (repeat for rotated keys; "
        "default AUDIT_TRUSTED_LOG_KEYS)",
    )
    verify.set_defaults(run=_verify)

    witness = sub.add_parser("witness", help="an independent witness of a log (C2SP)")
    witness_sub = witness.add_subparsers(metavar="ACTION")
    wserve = witness_sub.add_parser("serve", help="serve POST /add-checkpoint (tlog-witness)")
    wserve.add_argument("--name", required=True, help="the witness's key name, e.g. dps.example/w1")
    wserve.add_argument(
        "--key", type=Path, required=True, help="its Ed25519 key (PEM; made if missing)"
    )
    wserve.add_argument("--state", type=Path, required=True, help="its state file (JSON)")
    wserve.add_argument("--log-vkey", action="append", required=True, metavar="VKEY",
                        help="a log key it witnesses (repeat for several)")  # fmt: skip
    wserve.add_argument("--host", default="127.0.0.1")
    wserve.add_argument("--port", type=int, default=8080)
    wserve.set_defaults(run=_witness_serve)
    wvkey = witness_sub.add_parser("vkey", help="print the witness's verifier key")
    wvkey.add_argument("--name", required=True)
    wvkey.add_argument("--key", type=Path, required=True)
    wvkey.set_defaults(run=_witness_vkey)

    log_cmd = sub.add_parser("log", help="the verifiable log's identity")
    log_sub = log_cmd.add_subparsers(metavar="ACTION")
    info = log_sub.add_parser("info", help="print the log's origin and verifier key (vkey)")
    info.set_defaults(run=_log_info)
    return parser


def _witness_serve(args: argparse.Namespace) -> int:
    from app.ledger.note import NoteError, Verifier
    from app.witness import Witness, load_or_create_key, serve

    try:
        logs = [Verifier.from_vkey(vkey) for vkey in args.log_vkey]
        witness = Witness(args.name, load_or_create_key(args.key), args.state, logs)
    except NoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"witness vkey {witness.vkey}", flush=True)
    serve(witness, args.host, args.port)
    return 0


def _witness_vkey(args: argparse.Namespace) -> int:
    from app.ledger.note import COSIGNATURE_V1, NoteError, NoteSigner
    from app.witness import load_or_create_key

    try:
        signer = NoteSigner(args.name, load_or_create_key(args.key), kind=COSIGNATURE_V1)
    except NoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(signer.verifier.vkey)
    return 0


def _log_info(_: argparse.Namespace) -> int:
    from app.context import build_context

    context = build_context(Settings())
    try:
        context.start()
        with context.database.transaction() as session:
            origin = context.transparency.origin_for(session)
            vkey = context.transparency.vkey(session)
    finally:
        context.dispose()
    print(f"origin {origin}")
    print(f"vkey   {vkey}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.db import make_engine
    from app.migrate import schema_state, upgrade

    settings = Settings()
    engine = make_engine(settings.database_url)
    state = schema_state(engine, settings.database_url)
    engine.dispose()
    if state == "empty":
        log.info("empty database: migrating to head first")
        upgrade(settings.database_url)
    elif state == "behind":
        log.error("the database schema is behind the code: run `access-audit migrate` first")
        return 1
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=False,
        log_level="info",
        # Off unless asked for: a request line carries its path and query, which name case
        # records, actors and filters, in plain text outside the log; the log itself and
        # /metrics (by route template) say what was done. It also costs every request.
        access_log=args.access_log,
        # Named, not left to uvicorn's "auto" (which takes uvloop and httptools whenever
        # they are installed): under the floods of bench/isolation.py, uvloop let them
        # starve ordinary decisions (flooded p99 6.8 s against 0.27 s with asyncio's loop)
        # and httptools doubled the flooded p99 (0.9-1.1 s), for 0.07-0.24 ms of CPU a
        # request saved when calm. Isolation first; docs/operations.md has the figures.
        http="h11",
        loop="asyncio",
    )
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from app.migrate import upgrade

    upgrade(Settings().database_url)
    print("database schema is at head")
    return 0


def _users_add(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from app.context import build_context
    from app.errors import AppError
    from app.users.schemas import UserCreate

    password = args.password
    if password == "-":
        interactive = sys.stdin.isatty()
        password = getpass.getpass() if interactive else sys.stdin.readline().rstrip("\n")
    context = build_context(Settings())
    try:
        context.start()
        body = UserCreate(
            username=args.username,
            full_name=args.full_name or args.username,
            roles=args.roles,
            facilities=args.facilities,
            volunteer=args.volunteer,
            password=password or None,
        )
        with context.database.transaction() as session:
            user = context.users.create_user(session, None, body)
    except ValidationError as exc:
        for error in exc.errors():
            print(f"error: {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 2
    except AppError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        context.dispose()
    print(f"created {user.username} with roles {', '.join(user.roles)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from app import demo
    from app.context import build_context

    settings = Settings()
    context = build_context(settings)
    try:
        if demo.already_loaded(context):
            if not args.if_empty:
                print(
                    "error: the database already has users; the demo loads into an empty "
                    "database (use --if-empty to just print the logins)",
                    file=sys.stderr,
                )
                return 1
        else:
            demo.load(settings, seed=args.seed, scale=args.scale)
        facts = demo.summary(context)
    finally:
        context.dispose()
    print(f"\n{facts['events']} events in the log, {facts['denied']} access attempts denied.")
    if not facts["demo"]:
        print("(this database was not loaded by the demo: use your own logins)")
        return 0
    print("Demo logins (development only: these passwords are public):")
    for username, _, roles in demo.LOGINS:
        print(f"  {roles[0]:<10} {username:<15} {demo.DEMO_PASSWORD}")
    if facts["client"]:
        client = facts["client"]
        print(
            f"  integration client_id={client['client_id']} client_secret={client['client_secret']}"
        )
    print("Sign in at /docs (Authorize) or /dashboard.")
    return 0


def _policy_check(args: argparse.Namespace) -> int:
    from app.policy.loader import PolicyLoadError, load_policy

    folder = args.dir or Settings().policy_dir
    try:
        policy = load_policy(folder)
    except PolicyLoadError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"{folder}: valid, version {policy.version}\n"
        f"  {len(policy.facilities)} facilities, {len(policy.action_category)} actions, "
        f"{len(policy.role_categories)} mission roles, {len(policy.purposes)} purposes, "
        f"{len(policy.training_validity_days)} training modules"
    )
    return 0


def _policy_test(args: argparse.Namespace) -> int:
    from app.policy.cases import run_cases, table
    from app.policy.loader import PolicyLoadError, load_policy

    folder = args.dir or Settings().policy_dir
    try:
        results = run_cases(load_policy(folder), folder)
    except PolicyLoadError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(table(results))
    return 0 if results and all(r.passed for r in results) else 1


def _policy_propose(args: argparse.Namespace) -> int:
    import json
    import os
    import urllib.error
    import urllib.parse
    import urllib.request

    from app.policy.cases import case_files
    from app.policy.loader import PolicyLoadError, canonical_content, read_documents

    try:
        merged, _ = read_documents(args.dir)
        files = case_files(args.dir)
    except PolicyLoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    body: dict[str, Any] = {
        "content": canonical_content(merged),
        "authority": args.authority,
        "cases": [{"name": name, **content} for name, content in files],
    }
    if args.effective_from:
        body["effective_from"] = args.effective_from
    base = args.url.rstrip("/")

    def call(path: str, data: bytes, content_type: str, token: str | None = None) -> Any:
        headers = {"Content-Type": content_type}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(base + path, data=data, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    try:
        token = args.token or os.environ.get("AUDIT_TOKEN")
        if not token:
            if not args.username:
                print("error: give --token (or $AUDIT_TOKEN) or --username", file=sys.stderr)
                return 2
            password = _password(args.password)
            form = urllib.parse.urlencode(
                {"grant_type": "password", "username": args.username, "password": password}
            )
            token = call("/v1/auth/token", form.encode(), "application/x-www-form-urlencoded")[
                "access_token"
            ]
        made = call("/v1/policies", json.dumps(body).encode(), "application/json", token)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        print(f"error: {exc.code} {exc.reason}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    print(
        f"proposed {made['version']} ({made['status']}); an oversight officer approves it with "
        f"POST /v1/policies/{made['version']}/approve"
    )
    return 0


def _password(given: str | None) -> str:
    if given == "-":
        return sys.stdin.readline().rstrip("\n")
    return given if given is not None else getpass.getpass("password: ")


def _replay(args: argparse.Namespace) -> int:
    from datetime import datetime

    from tqdm import tqdm

    from app.context import build_context

    bounds: list[datetime | None] = []
    for name in ("since", "until"):
        text = getattr(args, name)
        try:
            moment = datetime.fromisoformat(text) if text else None
        except ValueError:
            moment = None
        if text and (moment is None or moment.tzinfo is None):
            print(f"error: --{name}: an RFC 3339 time with an offset", file=sys.stderr)
            return 2
        bounds.append(moment)
    context = build_context(Settings())
    problems = {"differs": 0, "unknown_version": 0, "without_facts": 0}
    shown = 0
    done = 0
    try:
        with (
            context.database.reader() as session,
            tqdm(unit=" events", desc="replay", leave=False) as bar,
        ):
            advance = _advance(bar)

            def progress(count: int) -> None:
                nonlocal done
                done = count
                advance(count)

            for problem, row, outcome in context.policies.replay(
                session, bounds[0], bounds[1], progress
            ):
                problems[problem] += 1
                if problem != "without_facts" and shown < 20:
                    shown += 1
                    if outcome is None:
                        tqdm.write(f"seq {row.seq}: judged by {row.policy_version}, "
                                   "a version the log does not hold")  # fmt: skip
                    else:
                        tqdm.write(f"seq {row.seq}: logged {_outcome(outcome.was)}, "
                                   f"judged again {_outcome(outcome.now)}")  # fmt: skip
    finally:
        context.dispose()
    failed = problems["differs"] + problems["unknown_version"]
    print(
        f"{done:,} decisions and reports judged again: "
        f"{done - failed - problems['without_facts']:,} reproduced, "
        f"{problems['differs']:,} differ, {problems['unknown_version']:,} under a version "
        f"the log does not hold, {problems['without_facts']:,} without recorded facts "
        "(logged before facts were recorded: not judged)"
    )
    return 1 if failed else 0


def _outcome(judged: tuple[str, tuple[str, ...], tuple[str, ...]]) -> str:
    decision, reasons, flags = judged
    text = decision + (f" [{', '.join(reasons)}]" if reasons else "")
    return text + (f" flags: {', '.join(flags)}" if flags else "")


EXPORT_FILTERS = (
    "actor", "action", "category", "facility", "record_type", "record_id", "decision",
    "purpose", "kind", "flag", "since", "until",
)  # fmt: skip


def _export(args: argparse.Namespace) -> int:
    import json

    from pydantic import ValidationError
    from tqdm import tqdm

    from app.context import build_context
    from app.errors import AppError
    from app.reports.schemas import EventFilters

    given = {name: getattr(args, name) for name in EXPORT_FILTERS if getattr(args, name)}
    try:
        filters = EventFilters(**given)
    except ValidationError as exc:
        for error in exc.errors():
            print(f"error: --{error['loc'][0]}: {error['msg']}", file=sys.stderr)
        return 2
    context = build_context(Settings())
    try:
        context.start()
        with args.out.open("wb") as out, tqdm(unit=" rows", desc="export", leave=False) as bar:
            export = context.exports.write_events_csv(filters, out, _advance(bar))
        if args.manifest:
            with context.database.reader() as session:
                manifest = context.exports.manifest(session, export.export_id)
            args.manifest.write_text(json.dumps(manifest.model_dump(), indent=2) + "\n")
    except AppError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        context.dispose()
    print(f"{export.rows:,} rows written to {args.out}")
    print(f"export {export.export_id}  sha256 {export.sha256}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import time

    from tqdm import tqdm

    from app.db import Database, make_engine
    from app.ledger.note import NoteError, Verifier
    from app.ledger.signing import load_public_key
    from app.ledger.verify import tree_checks, verify_chain

    if (args.from_seq is not None and args.from_seq < 1) or (
        args.to_seq is not None and args.to_seq < 1
    ):
        print("error: --from-seq and --to-seq start at 1", file=sys.stderr)
        return 2
    if args.from_seq is not None and args.to_seq is not None and args.from_seq > args.to_seq:
        print("error: --from-seq is greater than --to-seq", file=sys.stderr)
        return 2
    pinned = None
    if args.public_key is not None:
        pinned = []
        for path in args.public_key:
            try:
                key = load_public_key(path.read_text())
            except (OSError, UnicodeError) as exc:
                print(f"error: cannot read {path}: {exc.__class__.__name__}", file=sys.stderr)
                return 2
            if key is None:
                print(f"error: {path} is not an Ed25519 public key (PEM)", file=sys.stderr)
                return 2
            pinned.append(key)
    started = time.perf_counter()
    settings = Settings()
    try:
        log_keys = [Verifier.from_vkey(v) for v in args.log_vkey or settings.trusted_log_keys]
    except NoteError as exc:
        print(f"error: a log vkey: {exc}", file=sys.stderr)
        return 2
    if log_keys:
        pinned = [*(pinned or []), *(key.public_key for key in log_keys)]
    database = Database(make_engine(settings.database_url), settings.ledger_lock_timeout_seconds)
    try:
        with (
            database.reader() as session,
            tqdm(unit=" events", desc="verify", leave=False) as bar,
        ):
            result = verify_chain(
                session,
                from_seq=args.from_seq,
                to_seq=args.to_seq,
                pinned_keys=pinned,
                tree=tree_checks(session, log_keys, settings.log_origin, _signing_key(settings)),
                progress=_advance(bar),
            )
    finally:
        database.dispose()
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({**dataclasses.asdict(result), "seconds": round(seconds, 3)}))
    elif result.valid:
        head = (
            f"head seq {result.head_seq} hash {result.head_hash}"
            if result.head_seq is not None
            else "the log is empty"
        )
        print(
            f"valid: {result.checked:,} events and {result.checkpoints_checked:,} checkpoints "
            f"verified in {seconds:.1f} s; {head}"
        )
    else:
        print(f"INVALID at seq {result.first_invalid_seq}: {result.problem}")
    return 0 if result.valid else 1


def _signing_key(settings: Settings) -> Any:
    """The log's private key if this machine holds it (then authenticators are checked);
    verify never creates one."""
    from app.keys import SIGNING_KEY_FILE
    from app.ledger.signing import Signer

    path = settings.signing_key_file or settings.state_path / SIGNING_KEY_FILE
    if not path.exists():
        log.info("no signing key at %s: event authenticators are not checked", path)
        return None
    return Signer.from_pem_file(path).private_key


def _advance(bar: Any) -> Callable[[int], None]:
    """A progress callback taking the count so far, for a `tqdm` bar."""

    def advance(done: int) -> None:
        bar.update(done - bar.n)

    return advance


if __name__ == "__main__":
    raise SystemExit(main())
