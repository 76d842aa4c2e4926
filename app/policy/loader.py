"""Read a policy folder, validate it (errors name the file and the field), compile it."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from app.canonical import canonical_json
from app.policy.evaluator import CompiledPolicy, Facility
from app.policy.reasons import ReasonCode
from app.policy.schema import NAME, PolicyDocument
from app.vocabulary import SERVICE_ROLES

_NAME = re.compile(NAME)


class PolicyLoadError(Exception):
    """The policy folder is broken; `problems` lists each as 'file: field: message'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid policy:\n  " + "\n  ".join(problems))
        self.problems = problems


def policy_files(folder: Path) -> list[Path]:
    """The policy files of a folder (its `tests/` sub-folder holds cases, not policy)."""
    return sorted(p for p in folder.glob("*.toml") if p.is_file())


def read_documents(folder: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """Merge every file's top-level tables; each table must come from exactly one file."""
    if not folder.is_dir():
        raise PolicyLoadError([f"{folder}: not a folder"])
    files = policy_files(folder)
    if not files:
        raise PolicyLoadError([f"{folder}: no *.toml policy files"])
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    problems: list[str] = []
    for path in files:
        try:
            content = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        for key, value in content.items():
            if key in merged:
                problems.append(f"{path}: {key}: table already defined in {origin[key]}")
                continue
            merged[key] = value
            origin[key] = path
    if problems:
        raise PolicyLoadError(problems)
    return merged, origin


def policy_version(merged: dict[str, Any]) -> str:
    """`sha256:` of the canonical JSON of the merged content (comments and layout ignored)."""
    canonical = canonical_json(merged, default=_iso)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _iso(value: object) -> str:
    if isinstance(value, date | time):
        return value.isoformat()
    raise TypeError(f"unsupported value in policy: {value!r}")


def load_policy(folder: Path) -> CompiledPolicy:
    """Load, validate and compile the policy folder; raise PolicyLoadError on any problem
    (each naming the file and the field)."""
    merged, origin = read_documents(folder)

    def where(loc: tuple[Any, ...]) -> str:
        top = str(loc[0]) if loc else ""
        file = origin.get(top, folder)
        field = ".".join(str(part) for part in loc) or "(root)"
        return f"{file}: {field}"

    compiled, problems = check_content(merged)
    if compiled is None:
        raise PolicyLoadError([f"{where(loc)}: {message}" for loc, message in problems])
    return compiled


def canonical_content(merged: dict[str, Any]) -> dict[str, Any]:
    """The merged policy as JSON values (dates and times as ISO text): what the log holds
    and what `policy_version` digests; the same for a folder and for its JSON."""
    parsed: dict[str, Any] = json.loads(canonical_json(merged, default=_iso))
    return parsed


def check_content(
    merged: dict[str, Any],
) -> tuple[CompiledPolicy | None, list[tuple[tuple[Any, ...], str]]]:
    """Validate and compile merged policy content (from a folder, or JSON sent to the API):
    the compiled policy, or None and every problem as (location, message)."""
    try:
        content = canonical_content(merged)
    except (TypeError, ValueError) as exc:
        return None, [((), str(exc))]
    try:
        document = PolicyDocument.model_validate(content)
    except ValidationError as exc:
        return None, [(tuple(e["loc"]), e["msg"]) for e in exc.errors()]
    problems = _cross_check(document)
    if problems:
        return None, problems
    return _compile(document, policy_version(content), content), []


def compile_content(content: dict[str, Any]) -> CompiledPolicy:
    """Compile content known to be valid (a version the log holds); raise PolicyLoadError
    if it is not."""
    compiled, problems = check_content(content)
    if compiled is None:
        raise PolicyLoadError([f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems])
    return compiled


def _cross_check(doc: PolicyDocument) -> list[tuple[tuple[Any, ...], str]]:
    """References between tables must resolve; names must be lower_snake_case."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    try:
        ZoneInfo(doc.mission.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append((("mission", "timezone"), f"unknown time zone {doc.mission.timezone!r}"))
    if doc.mission.window_end < doc.mission.window_start:
        problems.append((("mission", "window_end"), "ends before window_start"))
    for table, names in (
        ("facilities", doc.facilities),
        ("purposes", doc.purposes),
        ("categories", doc.categories),
        ("actions", doc.actions),
        ("roles", doc.roles),
        ("training", doc.training),
    ):
        for name in names:
            if not _NAME.match(name):
                problems.append(((table, name), "names must be lower_snake_case"))
    for name in doc.roles:
        if name in SERVICE_ROLES:
            problems.append((("roles", name), "clashes with a service role"))
    for name, action in doc.actions.items():
        if action.category not in doc.categories:
            problems.append(
                (("actions", name, "category"), f"unknown category {action.category!r}")
            )
        if action.purposes != "any":
            for i, purpose in enumerate(action.purposes):
                if purpose not in doc.purposes:
                    problems.append(
                        (("actions", name, "purposes", i), f"unknown purpose {purpose!r}")
                    )
    for name, role in doc.roles.items():
        for i, category in enumerate(role.categories):
            if category not in doc.categories:
                problems.append(
                    (("roles", name, "categories", i), f"unknown category {category!r}")
                )
    for i, category in enumerate(doc.guard.forbidden_categories):
        if category not in doc.categories:
            problems.append(
                (("guard", "forbidden_categories", i), f"unknown category {category!r}")
            )
    for i, module in enumerate(doc.guard.required_training):
        if module not in doc.training:
            problems.append(
                (("guard", "required_training", i), f"unknown training module {module!r}")
            )
    codes = {c.value for c in ReasonCode}
    for i, code in enumerate(doc.break_glass.overrides):
        if code not in codes:
            problems.append((("break_glass", "overrides", i), f"unknown reason code {code!r}"))
        elif code == ReasonCode.enforcement_action_forbidden:
            problems.append(
                (
                    ("break_glass", "overrides", i),
                    "enforcement_action_forbidden is never overridable",
                )
            )
    return problems


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _compile(doc: PolicyDocument, version: str, content: dict[str, Any]) -> CompiledPolicy:
    all_purposes = frozenset(doc.purposes)
    return CompiledPolicy(
        version=version,
        content=content,
        name=doc.mission.name,
        timezone=ZoneInfo(doc.mission.timezone),
        window_start=doc.mission.window_start,
        window_end=doc.mission.window_end,
        facilities={k: Facility(k, f.name, f.live_from) for k, f in doc.facilities.items()},
        purposes=all_purposes,
        categories=tuple(doc.categories),
        action_category={k: a.category for k, a in doc.actions.items()},
        action_purposes={
            k: all_purposes if a.purposes == "any" else frozenset(a.purposes)
            for k, a in doc.actions.items()
        },
        role_categories={k: frozenset(r.categories) for k, r in doc.roles.items()},
        guard_roles=frozenset(k for k, r in doc.roles.items() if r.guard),
        break_glass_roles=frozenset(k for k, r in doc.roles.items() if r.break_glass),
        guard_forbidden=frozenset(doc.guard.forbidden_categories),
        guard_must_be_volunteer=doc.guard.must_be_volunteer,
        guard_must_be_assigned=doc.guard.must_be_assigned,
        required_training=tuple(doc.guard.required_training),
        training_validity_days={k: m.validity_days for k, m in doc.training.items()},
        break_glass_overrides=frozenset(ReasonCode(c) for c in doc.break_glass.overrides),
        min_justification_chars=doc.break_glass.min_justification_chars,
        after_hours_start=_clock(doc.flags.after_hours_start),
        after_hours_end=_clock(doc.flags.after_hours_end),
        volume_spike_records=doc.flags.volume_spike_records,
        volume_spike_window_minutes=doc.flags.volume_spike_window_minutes,
        late_report_hours=doc.flags.late_report_hours,
    )
