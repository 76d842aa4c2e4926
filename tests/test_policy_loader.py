"""Loading the policy folder: the shipped policy, clear errors, the version."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.cli import main
from app.policy.loader import PolicyLoadError, load_policy

POLICIES = Path(__file__).resolve().parent.parent / "policies"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_shipped_policy_encodes_the_mission() -> None:
    policy = load_policy(POLICIES)
    assert policy.version.startswith("sha256:")
    assert len(policy.version) == 71
    assert str(policy.window_start) == "2025-10-01"
    assert str(policy.window_end) == "2026-09-30"
    assert {k: str(f.live_from) for k, f in policy.facilities.items()} == {
        "greene": "2025-10-01",
        "phelps": "2025-10-15",
        "ste_genevieve": "2025-11-01",
    }
    assert policy.guard_roles == {"guard_clerk", "guard_logistics", "guard_supervisor"}
    assert policy.break_glass_roles == {"guard_supervisor"}
    assert policy.guard_forbidden == {"sworn", "enforcement"}
    assert set(policy.required_training) == {
        "data_handling",
        "detainee_privacy",
        "evidence_chain",
        "facility_safety",
    }
    assert policy.action_purposes["read_case"] == policy.purposes - {"supply_logistics"}
    assert policy.action_purposes["arrest"] == policy.purposes


def test_version_ignores_comments_but_not_content(folder: Path) -> None:
    base = load_policy(folder).version
    (folder / "roles.toml").write_text("# a new comment\n" + (folder / "roles.toml").read_text())
    assert load_policy(folder).version == base
    _edit(folder / "mission.toml", "window_end = 2026-09-30", "window_end = 2026-12-31")
    assert load_policy(folder).version != base


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "roles.toml",
            'categories = ["administrative"]',
            'categories = ["adminstrative"]',
            "roles.toml: roles.guard_clerk.categories.0: unknown category 'adminstrative'",
        ),
        (
            "actions.toml",
            'category = "enforcement"\npurposes = "any"',
            'category = "enforcement"\npurposes = "any"\nsworn = true',
            "actions.toml: actions.arrest.sworn",
        ),
        (
            "mission.toml",
            "live_from = 2025-10-15",
            'live_from = "soon"',
            "mission.toml: facilities.phelps.live_from",
        ),
        (
            "mission.toml",
            'overrides = ["facility_not_assigned"]',
            'overrides = ["enforcement_action_forbidden"]',
            "never overridable",
        ),
        (
            "mission.toml",
            'timezone = "America/Chicago"',
            'timezone = "Mars/Olympus"',
            "mission.toml: mission.timezone: unknown time zone",
        ),
        (
            "actions.toml",
            'purposes = ["transfer_scheduling"]',
            'purposes = ["transfers"]',
            "actions.toml: actions.schedule_transfer.purposes.0: unknown purpose 'transfers'",
        ),
        (
            "roles.toml",
            'required_training = ["data_handling"',
            'required_training = ["data_handlin"',
            "unknown training module 'data_handlin'",
        ),
        (
            "mission.toml",
            'after_hours_start = "06:00"',
            'after_hours_start = "6am"',
            "flags.after_hours_start",
        ),
    ],
)
def test_errors_name_the_file_and_the_field(
    folder: Path, file: str, old: str, new: str, expected: str
) -> None:
    _edit(folder / file, old, new)
    with pytest.raises(PolicyLoadError) as caught:
        load_policy(folder)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_a_table_defined_twice_is_an_error(folder: Path) -> None:
    (folder / "extra.toml").write_text('[purposes]\nsightseeing = "no"\n')
    with pytest.raises(PolicyLoadError, match="already defined in"):
        load_policy(folder)


def test_toml_syntax_error_names_the_file(folder: Path) -> None:
    (folder / "roles.toml").write_text("[roles\n")
    with pytest.raises(PolicyLoadError, match=r"roles\.toml"):
        load_policy(folder)


def test_policy_check_command(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(folder)]) == 0
    assert "valid, version sha256:" in capsys.readouterr().out
    _edit(folder / "roles.toml", 'categories = ["logistics"]', 'categories = ["logistix"]')
    assert main(["policy", "check", str(folder)]) == 1
    assert "unknown category 'logistix'" in capsys.readouterr().err
