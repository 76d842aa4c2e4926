"""docs/integrity.md stays true: its worked example is what the code computes, and the
independent verifier accepts the example's files."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from app.migrate import ROOT

DOC = ROOT / "docs" / "integrity.md"


def _example_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "integrity_example", ROOT / "tools" / "integrity_example.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documents_example_is_what_the_code_computes() -> None:
    doc = DOC.read_text()
    for name, value in _example_module().example().items():
        if isinstance(value, dict):
            quoted = json.dumps(value, indent=2)
        elif name == "csv":
            quoted = value.replace("\r\n", "\n").rstrip()
        else:
            quoted = value.rstrip()
        assert quoted in doc, f"docs/integrity.md no longer shows the example's {name}"


def test_the_independent_verifier_accepts_the_documents_example(tmp_path: Path) -> None:
    _example_module().write(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "verify_export.py"),
            str(tmp_path / "events.csv"),
            "--manifest",
            str(tmp_path / "manifest.json"),
            "--checkpoint",
            str(tmp_path / "checkpoint.json"),
            "--public-key",
            str(tmp_path / "public-key.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout.strip()
    assert said.startswith("valid: 2 rows (seq 1..2); every hash recomputes, 1 link checked")
    assert "rows 1..2 are anchored to it" in said
