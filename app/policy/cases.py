"""Decision cases stored with the policy (`policies/tests/*.toml`) and their runner.

A case is an actor profile, a request and a clock, with the expected decision, reason
codes (in order) and flags. `access-audit policy test` and the test suite run them all.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from app.canonical import canonical_json
from app.policy.evaluator import AccessRequest, ActorProfile, CompiledPolicy, TrainingRecord
from app.policy.loader import PolicyLoadError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingSpan(_Strict):
    completed_on: date
    expires_on: date | None = None


class CaseActor(_Strict):
    username: str = "case.actor"
    roles: list[str] = Field(default_factory=list)
    facilities: list[str] = Field(default_factory=list)
    volunteer: bool = True
    active: bool = True
    # "current": every required module done 30 days before `at`; "none"; or per module.
    training: Literal["current", "none"] | dict[str, date | TrainingSpan] = "current"


class CaseRequest(_Strict):
    action: str
    facility: str
    purpose: str
    record_type: str = "detainee_case"
    record_id: str = "CASE-1"
    justification: str | None = None
    break_glass: bool = False


class Expectation(_Strict):
    decision: Literal["allow", "deny"]
    reasons: list[str] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)


class DecisionCase(_Strict):
    name: str
    at: AwareDatetime | None = None
    actor: CaseActor | Literal["unknown"] | None = None
    request: CaseRequest
    kind: Literal["decision", "report"] = "decision"
    reported_at: AwareDatetime | None = None
    recent_records: int = Field(default=1, ge=1)
    expect: Expectation


class CaseDefaults(_Strict):
    at: AwareDatetime | None = None
    actor: CaseActor | None = None


class CaseFile(_Strict):
    defaults: CaseDefaults = Field(default_factory=CaseDefaults)
    case: list[DecisionCase] = Field(min_length=1)


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    expected: str
    got: str


def load_cases(folder: Path) -> list[tuple[str, DecisionCase]]:
    """Every case of `folder/tests/*.toml` with defaults applied, as (file name, case)."""
    files: list[tuple[str, Any]] = []
    problems: list[str] = []
    for path in sorted((folder / "tests").glob("*.toml")):
        try:
            files.append((path.name, tomllib.loads(path.read_text(encoding="utf-8"))))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path}: {exc}")
    cases, more = parse_cases(files)
    problems.extend(f"{folder / 'tests' / file}: {message}" for file, message in more)
    if problems:
        raise PolicyLoadError(problems)
    return cases


def case_files(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """The case files of `folder/tests/` as JSON values (name, content), as the API takes
    them with a proposal."""
    files: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for path in sorted((folder / "tests").glob("*.toml")):
        try:
            content = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path}: {exc}")
            continue
        files.append((path.name, json.loads(canonical_json(content, default=_iso))))
    if problems:
        raise PolicyLoadError(problems)
    return files


def _iso(value: object) -> str:
    if isinstance(value, date | time):
        return value.isoformat()
    raise TypeError(f"unsupported value in a case file: {value!r}")


def parse_cases(
    files: Sequence[tuple[str, Any]],
) -> tuple[list[tuple[str, DecisionCase]], list[tuple[str, str]]]:
    """Case files (name, parsed content: a table with `defaults` and `case`), as sent to
    the API or read from a folder: the cases with defaults applied, and every problem as
    (file name, message)."""
    cases: list[tuple[str, DecisionCase]] = []
    problems: list[tuple[str, str]] = []
    for name, content in files:
        try:
            parsed = CaseFile.model_validate(content)
        except ValidationError as exc:
            problems.extend(
                (name, f"{'.'.join(map(str, e['loc']))}: {e['msg']}") for e in exc.errors()
            )
            continue
        for case in parsed.case:
            at = case.at or parsed.defaults.at
            if at is None:
                problems.append((name, f"case {case.name!r}: no `at` (nor a default)"))
                continue
            actor = case.actor if case.actor is not None else parsed.defaults.actor
            cases.append((name, case.model_copy(update={"at": at, "actor": actor})))
    return cases, problems


def _profile(policy: CompiledPolicy, actor: CaseActor, at: datetime) -> ActorProfile:
    training: dict[str, tuple[TrainingRecord, ...]] = {}
    if actor.training == "current":
        done = policy.local_date(at) - timedelta(days=30)
        for module in policy.required_training:
            training[module] = (TrainingRecord(module, done, policy.training_expiry(module, done)),)
    elif isinstance(actor.training, dict):
        for module, span in actor.training.items():
            if isinstance(span, date):
                span = TrainingSpan(completed_on=span)
            expires = span.expires_on or policy.training_expiry(module, span.completed_on)
            training[module] = (TrainingRecord(module, span.completed_on, expires),)
    return ActorProfile(
        username=actor.username, roles=tuple(actor.roles),
        facilities=frozenset(actor.facilities), volunteer=actor.volunteer,
        active=actor.active, training=training,
    )  # fmt: skip


def run_case(policy: CompiledPolicy, case: DecisionCase) -> tuple[bool, str, str]:
    """(passed, expected, got) for one case."""
    assert case.at is not None
    actor = case.actor
    profile = None if actor in (None, "unknown") else _profile(policy, actor, case.at)  # type: ignore[arg-type]
    request = AccessRequest(**case.request.model_dump())
    reported_at = case.reported_at or (case.at if case.kind == "report" else None)
    judgement = policy.judge(
        profile, request, case.at, reported_at=reported_at,
        distinct_records_in_window=case.recent_records,
    )  # fmt: skip
    got = _describe(judgement.decision, judgement.reason_codes, [f.value for f in judgement.flags])
    expected = _describe(case.expect.decision, case.expect.reasons, case.expect.flags)
    return got == expected, expected, got


def _describe(decision: str, reasons: list[str], flags: list[str]) -> str:
    text = decision
    if reasons:
        text += " [" + ", ".join(reasons) + "]"
    if flags:
        text += " flags: " + ", ".join(flags)
    return text


def run_cases(
    policy: CompiledPolicy, folder_or_cases: Path | Sequence[tuple[str, DecisionCase]]
) -> list[CaseResult]:
    """Run the cases of a policy folder (or the given cases) against `policy`."""
    cases = load_cases(folder_or_cases) if isinstance(folder_or_cases, Path) else folder_or_cases
    results = []
    for file, case in cases:
        passed, expected, got = run_case(policy, case)
        results.append(CaseResult(file, case.name, passed, expected, got))
    return results


def table(results: list[CaseResult]) -> str:
    """A pass/fail table for the terminal."""
    width = max((len(r.name) for r in results), default=10)
    lines = [f"{'result':6}  {'case':{width}}  got", f"{'-' * 6}  {'-' * width}  {'-' * 30}"]
    for r in results:
        lines.append(f"{'PASS' if r.passed else 'FAIL':6}  {r.name:{width}}  {r.got}")
        if not r.passed:
            lines.append(f"{'':6}  {'':{width}}  expected: {r.expected}  ({r.file})")
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def case_ids(cases: list[tuple[str, DecisionCase]]) -> list[str]:
    return [f"{file}::{case.name}" for file, case in cases]
