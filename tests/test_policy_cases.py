"""The decision cases stored with the policy run as part of the suite, and cover every code."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from app.policy.cases import case_ids, load_cases, run_case
from app.policy.evaluator import CompiledPolicy
from app.policy.loader import load_policy
from app.policy.reasons import Flag, ReasonCode

POLICIES = Path(__file__).resolve().parent.parent / "policies"
POLICY = load_policy(POLICIES)
CASES = load_cases(POLICIES)


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=case_ids(CASES))
def test_decision_case(case: object) -> None:
    passed, expected, got = run_case(POLICY, case)  # type: ignore[arg-type]
    assert passed, f"expected {expected}, got {got}"


def test_cases_cover_every_reason_code_and_flag() -> None:
    reasons = {code for _, case in CASES for code in case.expect.reasons}
    flags = {flag for _, case in CASES for flag in case.expect.flags}
    assert reasons == {code.value for code in ReasonCode}
    assert flags == {flag.value for flag in Flag}


def test_policy_test_command_prints_a_table_and_fails_on_a_wrong_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "test", str(POLICIES)]) == 0
    out = capsys.readouterr().out
    assert f"{len(CASES)} passed, 0 failed" in out
    import shutil

    folder = tmp_path / "policies"
    shutil.copytree(POLICIES, folder)
    cases = folder / "tests" / "flags.toml"
    cases.write_text(cases.read_text().replace("recent_records = 51", "recent_records = 5", 1))
    assert main(["policy", "test", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert "1 failed" in out


def test_a_broken_case_file_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    folder = tmp_path / "policies"
    shutil.copytree(POLICIES, folder)
    (folder / "tests" / "bad.toml").write_text('[[case]]\nname = "x"\nexpect = {}\n')
    assert main(["policy", "test", str(folder)]) == 1
    assert "bad.toml" in capsys.readouterr().err


def test_policy_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judging reads no files: the evaluator works with the policy folder gone."""
    assert isinstance(POLICY, CompiledPolicy)
    monkeypatch.setattr(Path, "read_text", lambda *_a, **_k: (_ for _ in ()).throw(OSError()))
    _, case = CASES[0]
    assert run_case(POLICY, case)[0]
