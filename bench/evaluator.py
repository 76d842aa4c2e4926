"""Per-decision time of the compiled evaluator against pycasbin and cedarpy, same rules.

The request mix is the one the HTTP benchmarks send (routine work, wrong purposes, other
facilities, Guard roles attempting enforcement, break glass, lapsed/unassigned/inactive and
unknown actors, made-up names), judged at times spread over a mission day. Every engine is
given everything pre-built (profiles, casbin subjects, cedar entities/policies/schema
handles), so each timed call is one decision and nothing else.

What the other two cannot express and get pre-digested (the same for both):
  * "the latest completion of each module, and its expiry": each actor carries, per
    required module, the expiry date (as YYYYMMDD) of the latest record completed by the
    decision's date, or -1; the engines compare it with today;
  * time zones: the facility-local date and hour are computed before the call (`today`);
  * reasons: both answer allow/deny only (casbin's enforce_ex names one matched rule,
    cedar's diagnostics name the policies); ours returns every reason and the flags, which
    is the work timed here for ours (`judge`; `evaluate` alone is reported too).
  * the flags (after hours, volume spike, late report) are not decisions and are left out.

    .venv/bin/python bench/evaluator.py [--requests 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock
from types import SimpleNamespace
from typing import Any

from harness import (
    POLICY_DIR,
    TRAINING,
    ActorSpec,
    RequestMix,
    Table,
    machine,
    median,
    percentile,
    roster,
    write_results,
)

from app.policy.evaluator import (
    ALLOW,
    AccessRequest,
    ActorProfile,
    CompiledPolicy,
    TrainingRecord,
)
from app.policy.loader import load_policy

MISSION_DAY = date(2026, 3, 10)  # a Tuesday inside the shipped mission window


def day_number(value: date) -> int:
    return value.year * 10_000 + value.month * 100 + value.day


@dataclass(frozen=True)
class Case:
    """One request as each engine takes it, and what kind of request it is."""

    kind: str
    profile: ActorProfile | None
    request: AccessRequest
    at: datetime
    casbin: tuple[Any, ...]
    cedar: dict[str, Any]


# --- our evaluator's inputs -----------------------------------------------------------------


def profile_of(spec: ActorSpec, policy: CompiledPolicy, on: date) -> ActorProfile:
    training: dict[str, tuple[TrainingRecord, ...]] = {}
    if spec.training_age_days is not None:
        done = on - timedelta(days=spec.training_age_days)
        training = {
            m: (TrainingRecord(m, done, policy.training_expiry(m, done)),) for m in TRAINING
        }
    return ActorProfile(
        username=spec.username,
        roles=spec.roles,
        facilities=frozenset(spec.facilities),
        volunteer=spec.volunteer,
        active=spec.active,
        training=training,
    )


def training_expiry(profile: ActorProfile, module: str, today: date) -> int:
    """YYYYMMDD expiry of the latest record of `module` completed by `today`, else -1."""
    latest: TrainingRecord | None = None
    for record in profile.training.get(module, ()):
        if record.completed_on <= today and (
            latest is None or record.completed_on >= latest.completed_on
        ):
            latest = record
    return day_number(latest.expires_on) if latest else -1


# --- pycasbin --------------------------------------------------------------------------------

CASBIN_MODEL = """
[request_definition]
r = sub, act, pur, fac, env

[policy_definition]
p = role, cat, eft

[role_definition]
g = _, _
g2 = _, _
g3 = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = g(r.sub.name, p.role) && g2(r.act, p.cat) && (p.eft == "deny" || (r.sub.active && \
g3(r.act, r.pur) && r.fac.known && (!r.env.glass || (r.sub.may_glass && r.env.just >= {min_just})) \
&& (!r.sub.guard || (r.env.today >= {start} && r.env.today <= {end} && r.env.today >= r.fac.live \
&& r.sub.volunteer && {training} && (r.fac.name in r.sub.facilities || (r.env.glass && \
r.sub.may_glass && r.env.just >= {min_just}))))))
"""


def casbin_enforcer(policy: CompiledPolicy, actors: list[ActorSpec]) -> Any:
    """Roles -> categories as p rows (deny rows for the Guard ban), users -> roles as g,
    actions -> categories as g2, action -> admitted purpose as g3; the Guard rules, the
    window, rollout, volunteer, training and break glass as the ABAC matcher."""
    import casbin

    training = " && ".join(f"r.sub.t_{m} >= r.env.today" for m in policy.required_training)
    text = CASBIN_MODEL.format(
        min_just=policy.min_justification_chars,
        start=day_number(policy.window_start),
        end=day_number(policy.window_end),
        training=training or "true",
    )
    model = casbin.Model()
    model.load_model_from_text(text)
    enforcer = casbin.Enforcer(model)
    for role, categories in policy.role_categories.items():
        for category in categories:
            enforcer.add_policy(role, category, "allow")
        if role in policy.guard_roles:
            for category in policy.guard_forbidden:
                enforcer.add_policy(role, category, "deny")
    for actor in actors:
        for role in actor.roles:
            enforcer.add_grouping_policy(actor.username, role)
    for action, category in policy.action_category.items():
        enforcer.add_named_grouping_policy("g2", action, category)
        for purpose in policy.action_purposes[action]:
            enforcer.add_named_grouping_policy("g3", action, purpose)
    return enforcer


def casbin_request(
    policy: CompiledPolicy, profile: ActorProfile | None, request: AccessRequest, today: date
) -> tuple[Any, ...]:
    roles = profile.roles if profile else ()
    subject = SimpleNamespace(
        name=profile.username if profile else "",
        active=profile.active if profile else False,
        guard=any(r in policy.guard_roles for r in roles),
        may_glass=any(r in policy.break_glass_roles for r in roles),
        volunteer=profile.volunteer if profile else False,
        facilities=tuple(profile.facilities) if profile else (),
        **{
            f"t_{m}": training_expiry(profile, m, today) if profile else -1
            for m in policy.required_training
        },
    )
    facility = policy.facilities.get(request.facility)
    fac = SimpleNamespace(
        name=request.facility,
        known=facility is not None,
        live=day_number(facility.live_from) if facility else 99_999_999,
    )
    env = SimpleNamespace(
        today=day_number(today),
        glass=request.break_glass,
        just=len((request.justification or "").strip()),
    )
    return (subject, request.action, request.purpose, fac, env)


# --- cedarpy ---------------------------------------------------------------------------------


def cedar_documents(policy: CompiledPolicy) -> tuple[str, str]:
    """(schema, policies) in Cedar's own syntax."""
    modules = "".join(f"t_{m}: Long, " for m in policy.required_training)
    schema_actions = "".join(f'action "{c}";\n' for c in policy.categories) + "".join(
        f'action "{a}" in ["{c}"] appliesTo {{ principal: [User], resource: [Record], '
        f"context: Ctx }};\n"
        for a, c in policy.action_category.items()
    )
    schema = (
        "entity Role in [Role];\n"
        f"entity User in [Role] {{ active: Bool, volunteer: Bool, facilities: Set<String>, "
        f"{modules}}};\n"
        "entity Record;\n"
        "entity Facility { live: Long };\n"
        "type Ctx = { today: Long, facility: String, known_facility: Bool, live: Long, "
        "purpose: String, glass: Bool, just: Long };\n" + schema_actions
    )
    rules: list[str] = []
    for role, categories in policy.role_categories.items():
        actions = ", ".join(f'Action::"{c}"' for c in sorted(categories))
        rules.append(
            f'permit(principal in Role::"{role}", action in [{actions}], resource)\n'
            "  when { context.known_facility };"
        )
    purposes = " ||\n    ".join(
        f'(action == Action::"{a}" && [{", ".join(f"{chr(34)}{p}{chr(34)}" for p in sorted(ps))}]'
        ".contains(context.purpose))"
        for a, ps in policy.action_purposes.items()
    )
    rules.append(f"forbid(principal, action, resource) unless {{\n    {purposes}\n}};")
    rules.append("forbid(principal, action, resource) unless { principal.active };")
    glass_ok = (
        f'principal in Role::"break_glass" && context.just >= {policy.min_justification_chars}'
    )
    rules.append(
        f"forbid(principal, action, resource) when {{ context.glass }} unless {{ {glass_ok} }};"
    )
    forbidden = ", ".join(f'Action::"{c}"' for c in sorted(policy.guard_forbidden))
    rules.append(f'forbid(principal in Role::"guard", action in [{forbidden}], resource);')
    training = " && ".join(f"principal.t_{m} >= context.today" for m in policy.required_training)
    rules.append(
        'forbid(principal in Role::"guard", action, resource) unless {\n'
        f"    context.today >= {day_number(policy.window_start)} && "
        f"context.today <= {day_number(policy.window_end)} &&\n"
        "    context.today >= context.live && principal.volunteer &&\n"
        f"    {training or 'true'} &&\n"
        "    (principal.facilities.contains(context.facility) ||\n"
        f"     (context.glass && {glass_ok}))\n"
        "};"
    )
    return schema, "\n".join(rules)


def cedar_entities(policy: CompiledPolicy, profiles: list[ActorProfile], today: date) -> list[Any]:
    roles = [
        {"uid": {"type": "Role", "id": r}, "attrs": {}, "parents": []}
        for r in (*policy.role_categories, "guard", "break_glass")
    ]
    users = []
    for p in profiles:
        parents = [{"type": "Role", "id": r} for r in p.roles]
        if any(r in policy.guard_roles for r in p.roles):
            parents.append({"type": "Role", "id": "guard"})
        if any(r in policy.break_glass_roles for r in p.roles):
            parents.append({"type": "Role", "id": "break_glass"})
        attrs: dict[str, Any] = {
            "active": p.active,
            "volunteer": p.volunteer,
            "facilities": sorted(p.facilities),
        }
        for m in policy.required_training:
            attrs[f"t_{m}"] = training_expiry(p, m, today)
        users.append(
            {"uid": {"type": "User", "id": p.username}, "attrs": attrs, "parents": parents}
        )
    return roles + users


def cedar_request(
    policy: CompiledPolicy,
    profile: ActorProfile | None,
    request: AccessRequest,
    today: date,
    username: str,
) -> dict[str, Any]:
    facility = policy.facilities.get(request.facility)
    return {
        "principal": f'User::"{username}"',
        "action": f'Action::"{request.action}"',
        "resource": f'Record::"{request.record_id}"',
        "context": {
            "today": day_number(today),
            "facility": request.facility,
            "known_facility": facility is not None,
            "live": day_number(facility.live_from) if facility else 99_999_999,
            "purpose": request.purpose,
            "glass": request.break_glass,
            "just": len((request.justification or "").strip()),
        },
    }


# --- the run ---------------------------------------------------------------------------------


def cases(policy: CompiledPolicy, n: int, seed: int) -> tuple[list[Case], list[ActorProfile]]:
    actors = roster()
    profiles = {a.username: profile_of(a, policy, MISSION_DAY) for a in actors}
    mix = RequestMix(actors, seed=seed)
    rng = random.Random(seed)
    built: list[Case] = []
    for _ in range(n):
        kind, body = mix.next()
        local = datetime.combine(
            MISSION_DAY, clock(rng.randrange(5, 22), rng.randrange(60)), policy.timezone
        )
        request = AccessRequest(
            action=body["action"],
            facility=body["record"]["facility"],
            purpose=body["purpose"],
            record_type=body["record"]["type"],
            record_id=body["record"]["id"],
            justification=body.get("justification"),
            break_glass=body.get("break_glass", False),
        )
        profile = profiles.get(body["actor"])
        today = policy.local_date(local)
        built.append(
            Case(
                kind=kind,
                profile=profile,
                request=request,
                at=local,
                casbin=casbin_request(policy, profile, request, today),
                cedar=cedar_request(policy, profile, request, today, body["actor"]),
            )
        )
    return built, list(profiles.values())


def time_calls(decide: Callable[[Case], bool], batch: list[Case], repeat: int) -> dict[str, Any]:
    """Per-call times (µs) over `repeat` passes, and the mean of a tight loop."""
    per_call: list[float] = []
    outcomes: list[bool] = []
    for case in batch[:200]:  # warm up
        decide(case)
    loop = float("inf")
    for i in range(repeat):
        started = time.perf_counter()
        for case in batch:
            decide(case)
        loop = min(loop, (time.perf_counter() - started) / len(batch))
        for case in batch:
            t = time.perf_counter_ns()
            allowed = decide(case)
            per_call.append((time.perf_counter_ns() - t) / 1000)
            if i == 0:
                outcomes.append(allowed)
    return {
        "median_us": median(per_call),
        "p95_us": percentile(per_call, 95),
        "p99_us": percentile(per_call, 99),
        "loop_mean_us": loop * 1e6,
        "outcomes": outcomes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    if not 100 <= args.requests <= 200_000 or not 1 <= args.repeat <= 50:
        parser.error("--requests must be 100-200,000 and --repeat 1-50")
    policy = load_policy(POLICY_DIR)
    batch, profiles = cases(policy, args.requests, args.seed)

    engines: dict[str, Callable[[Case], bool]] = {
        "access-audit judge": lambda c: policy.judge(c.profile, c.request, c.at).decision == ALLOW,
        "access-audit evaluate": lambda c: not policy.evaluate(c.profile, c.request, c.at)[0],
    }
    missing: dict[str, str] = {}
    try:
        enforcer = casbin_enforcer(policy, roster())
        engines["pycasbin"] = lambda c: bool(enforcer.enforce(*c.casbin))
    except ImportError as exc:
        missing["pycasbin"] = f"not installed ({exc}); pip install pycasbin"
    try:
        import cedarpy

        schema_text, policy_text = cedar_documents(policy)
        schema = cedarpy.Schema.from_str(schema_text)
        policies = cedarpy.PolicySet.from_str(policy_text)
        entities = cedarpy.Entities.from_json_str(
            json.dumps(cedar_entities(policy, profiles, MISSION_DAY)), schema
        )

        def cedar(c: Case) -> bool:
            return bool(cedarpy.is_authorized(c.cedar, policies, entities, schema).allowed)

        engines["cedarpy"] = cedar
    except ImportError as exc:
        missing["cedarpy"] = f"not installed ({exc}); pip install cedarpy"

    results = {name: time_calls(decide, batch, args.repeat) for name, decide in engines.items()}
    ours = results["access-audit judge"]["outcomes"]
    kinds = Counter(c.kind for c in batch)
    denied = sum(not o for o in ours)
    table = Table(["engine", "median µs", "p95 µs", "p99 µs", "loop mean µs", "agrees"])
    for name, r in results.items():
        agree = sum(a == b for a, b in zip(r.pop("outcomes"), ours, strict=True)) / len(ours)
        r["agreement_with_ours"] = agree
        table.add(name, r["median_us"], r["p95_us"], r["p99_us"], r["loop_mean_us"], f"{agree:.2%}")
    print(table.render())
    others = [results[n]["median_us"] for n in ("pycasbin", "cedarpy") if n in results]
    target = min(others) if others else None
    met = target is not None and results["access-audit judge"]["median_us"] <= target
    print(f"{len(batch):,} requests ({dict(kinds)}); {denied:,} denied by ours")
    limit = f"{target:.2f} µs" if target is not None else "n/a"
    print(
        f"target: our median (judge) <= the faster of the others ({limit}): "
        f"{'yes' if met else 'NO'}"
    )
    for name, why in missing.items():
        print(f"{name}: {why}", file=sys.stderr)
    path = write_results(
        "evaluator",
        {
            "benchmark": "evaluator",
            "requests": len(batch),
            "repeat": args.repeat,
            "kinds": dict(kinds),
            "denied_by_ours": denied,
            "machine": machine(),
            "results": results,
            "missing": missing,
            "target_us": target,
            "meets_target": met,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
